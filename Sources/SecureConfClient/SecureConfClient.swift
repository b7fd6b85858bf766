import Foundation
import SecureConfHTTP
import SecureConfJSON

/// The credentials a client sends: from the environment or from a file only the user can
/// read, never from the command line (argv shows in process lists). Never printed.
public struct Credentials: Sendable, CustomStringConvertible {
    public var apiKey: String?
    public var userKey: String?
    /// A bearer token (`OSC_AUTH_MODE=tokens`): a login token or a service token.
    public var token: String?

    public init(apiKey: String? = nil, userKey: String? = nil, token: String? = nil) {
        self.apiKey = apiKey
        self.userKey = userKey
        self.token = token
    }

    public static let tokenVariable = "SECURECONF_TOKEN"
    /// Where `secureconf login` keeps the token (default `~/.config/secureconf/token`).
    public static let tokenFileVariable = "SECURECONF_TOKEN_FILE"

    /// The token file's path: `SECURECONF_TOKEN_FILE`, else `~/.config/secureconf/token`.
    public static func tokenFilePath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let path = environment[tokenFileVariable], !path.isEmpty { return path }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.config/secureconf/token"
    }

    public static let apiKeyVariable = "OSC_API_KEY"
    public static let userKeyVariable = "SECURECONF_USER_KEY"
    /// Also read for the user key (OpenSecureConf's clients' habit).
    public static let oscUserKeyVariable = "OSC_USER_KEY"
    public static let fileVariable = "SECURECONF_CREDENTIALS_FILE"

    /// `OSC_API_KEY` and `SECURECONF_USER_KEY` (or `OSC_USER_KEY`); with `SECURECONF_CREDENTIALS_FILE` (or `file`),
    /// that file's values first, the environment's filling what it leaves out.
    public static func resolve(
        file: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ClientError) -> Credentials {
        func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        var credentials = Credentials(apiKey: value(apiKeyVariable), userKey: value(userKeyVariable) ?? value(oscUserKeyVariable))
        if let path = file ?? value(fileVariable) {
            let stored = try fromFile(path)
            credentials.apiKey = stored.apiKey ?? credentials.apiKey
            credentials.userKey = stored.userKey ?? credentials.userKey
            credentials.token = stored.token
        }
        credentials.token = credentials.token ?? value(tokenVariable) ?? (try? savedToken(at: tokenFilePath(environment: environment)))
        return credentials
    }

    /// `NAME=value` lines (`OSC_API_KEY`, `SECURECONF_USER_KEY`; `#` comments). The file must
    /// be a regular file that only its owner can read or write (mode 0600 or 0400).
    public static func fromFile(_ path: String) throws(ClientError) -> Credentials {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            attributes[.type] as? FileAttributeType == .typeRegular,
            let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue
        else {
            throw ClientError(.credentials, "cannot read the credentials file \(path)")
        }
        guard mode & 0o077 == 0 else {
            throw ClientError(.credentials, "the credentials file \(path) is readable by others (mode \(String(mode, radix: 8))); chmod 600 it")
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ClientError(.credentials, "cannot read the credentials file \(path)")
        }
        var credentials = Credentials()
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let equals = line.firstIndex(of: "=") else {
                throw ClientError(.credentials, "\(path) line \(number + 1): expected NAME=value")
            }
            let name = line[..<equals].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            switch name {
            case apiKeyVariable: credentials.apiKey = value.isEmpty ? nil : value
            case userKeyVariable: credentials.userKey = value.isEmpty ? nil : value
            case tokenVariable: credentials.token = value.isEmpty ? nil : value
            default: throw ClientError(.credentials, "\(path) line \(number + 1): unknown name \(name)")
            }
        }
        return credentials
    }

    /// The token `secureconf login` saved, when the file exists; it must be a 0600 regular file.
    public static func savedToken(at path: String) throws(ClientError) -> String? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            attributes[.type] as? FileAttributeType == .typeRegular,
            let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue, mode & 0o077 == 0,
            let text = try? String(contentsOfFile: path, encoding: .utf8)
        else { throw ClientError(.credentials, "the token file \(path) must be a regular file of mode 0600") }
        let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return token.isEmpty ? nil : token
    }

    public var description: String {
        "Credentials(api key: \(apiKey == nil ? "none" : "set"), user key: \(userKey == nil ? "none" : "set"), token: \(token == nil ? "none" : "set"))"
    }
}

/// Why a request failed, as a type; `description` is one line fit for a terminal (never a key).
public struct ClientError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The credentials are missing, unreadable or too widely readable.
        case credentials
        /// The URL cannot be built.
        case badURL
        /// The node did not answer.
        case unreachable
        /// The node answered with this status; `detail` is its `{"detail": ...}`.
        case refused(status: Int)
        /// What the node holds cannot be used as asked (two keys making one variable name).
        case unusable
    }

    public let kind: Kind
    public let detail: String

    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public var description: String {
        if case .refused(let status) = kind { return "\(status): \(detail)" }
        return detail
    }
}

/// One request of the SecureConf API, typed.
public enum ClientRequest: Sendable {
    case read(key: String, at: String? = nil)
    case list(category: String? = nil)
    case versions(key: String)
    case diff(key: String, from: Int, to: Int)
    case rollback(key: String, version: Int)
    case restore(at: String)
    case auditSearch(AuditQuery)
    case auditExport(format: String, since: String?, until: String?)
    case auditVerify
    /// `POST /configs`: 201 with the new record; 400 when the key exists.
    case create(key: String, value: JSONValue, category: String? = nil)
    /// `PUT /configs/{key}`: a new version (category nil keeps the current one).
    case update(key: String, value: JSONValue, category: String? = nil)
    /// `DELETE /configs/{key}`.
    case delete(key: String)
    /// `POST /backup`: the environment (optionally one category) as an encrypted backup
    /// under `password` (OpenSecureConf 3.1's format).
    case backup(password: String, category: String? = nil)
    /// `POST /import`: a backup's entries, written under the client's user key.
    case importBackup(backupData: String, password: String, overwrite: Bool = false)
    /// `POST /auth/login` (`tokens` mode): `{"access_token", "token_type", "expires_in"}`.
    case login(username: String, password: String)

    public struct AuditQuery: Sendable {
        public var key, action, actor, outcome, since, until, cursor: String?
        public var limit: Int?
        public init(
            key: String? = nil,
            action: String? = nil,
            actor: String? = nil,
            outcome: String? = nil,
            since: String? = nil,
            until: String? = nil,
            limit: Int? = nil,
            cursor: String? = nil
        ) {
            (self.key, self.action, self.actor, self.outcome, self.since, self.until, self.limit, self.cursor) =
                (key, action, actor, outcome, since, until, limit, cursor)
        }
    }

    var method: String {
        switch self {
        case .rollback, .restore, .create, .backup, .importBackup, .login: "POST"
        case .update: "PUT"
        case .delete: "DELETE"
        default: "GET"
        }
    }

    /// Whether the node needs the user key for it (the client refuses before sending without one).
    var needsUserKey: Bool {
        switch self {
        case .read, .list, .diff, .rollback, .restore, .create, .update, .backup, .importBackup: true
        default: false
        }
    }

    /// Safe to send again to another node after a failure that may have reached the first.
    var idempotent: Bool { method == "GET" }

    /// Extra headers (the backup password travels in one, never in the URL).
    var extraHeaders: [String: String] {
        switch self {
        case .backup(let password, _), .importBackup(_, let password, _): ["X-Backup-Password": password]
        default: [:]
        }
    }

    /// The JSON body, for the requests that have one.
    func body(environment: String?) -> JSONValue? {
        func object(_ members: [(String, JSONValue?)]) -> JSONValue { .object(members.compactMap { n, v in v.map { (n, $0) } }) }
        switch self {
        case let .create(key, value, category):
            return object([
                ("key", .string(key)), ("value", value), ("category", category.map(JSONValue.string)),
                ("environment", environment.map(JSONValue.string)),
            ])
        case let .update(_, value, category):
            return object([("value", value), ("category", category.map(JSONValue.string))])
        case let .importBackup(data, _, overwrite):
            return object([("backup_data", .string(data)), ("overwrite", .bool(overwrite))])
        case let .login(username, password):
            return object([("username", .string(username)), ("password", .string(password))])
        default: return nil
        }
    }

    /// Path segments (percent-encoded when sent) and query items (nil values left out).
    func target(environment: String?) -> (segments: [String], query: [(String, String?)]) {
        let env = ("environment", environment)
        switch self {
        case let .read(key, at): return (["configs", key], [env, ("at", at)])
        case let .list(category): return (["configs"], [env, ("category", category), ("mode", "full")])
        case let .versions(key): return (["configs", key, "versions"], [env])
        case let .diff(key, from, to): return (["configs", key, "diff"], [env, ("from", String(from)), ("to", String(to))])
        case let .rollback(key, version): return (["configs", key, "rollback"], [env, ("version", String(version))])
        case let .restore(at): return (["restore"], [env, ("at", at)])
        case let .auditSearch(q):
            return (
                ["audit"],
                [
                    ("key", q.key), env, ("action", q.action), ("actor", q.actor), ("outcome", q.outcome), ("since", q.since),
                    ("until", q.until), ("limit", q.limit.map(String.init)), ("cursor", q.cursor),
                ]
            )
        case let .auditExport(format, since, until): return (["audit", "export"], [("format", format), ("since", since), ("until", until), env])
        case .auditVerify: return (["audit", "verify"], [])
        case .create: return (["configs"], [])
        case let .update(key, _, _), let .delete(key): return (["configs", key], [env])
        case let .backup(_, category): return (["backup"], [env, ("category", category)])
        case .importBackup: return (["import"], [])
        case .login: return (["auth", "login"], [])
        }
    }
}

/// The result of `GET /audit/verify`.
public struct AuditVerification: Decodable, Sendable {
    public var valid: Bool
    public var first_broken: Int64?
}

/// A client of a SecureConf (or OpenSecureConf) node, or of a cluster's nodes tried in turn.
public struct SecureConfClient: Sendable {
    /// The nodes, in the order they are tried.
    public let baseURLs: [String]
    public var baseURL: String { baseURLs[0] }
    public let credentials: Credentials
    /// The environment requests address (nil: the node's default).
    public let environment: String?
    public var timeout: TimeInterval = 120
    /// A PEM file of the certificate authorities that https nodes are verified against,
    /// instead of the system's trust store (a private CA). https is always verified.
    public let caFile: String?

    /// The variable the CLI reads `caFile` from.
    public static let caFileVariable = "SECURECONF_CA_FILE"

    public init(baseURL: String, credentials: Credentials, environment: String? = nil, caFile: String? = nil) {
        self.init(baseURLs: [baseURL], credentials: credentials, environment: environment, caFile: caFile)
    }

    /// `baseURLs` must not be empty; each may be a comma-separated list too.
    public init(baseURLs: [String], credentials: Credentials, environment: String? = nil, caFile: String? = nil) {
        let urls = baseURLs.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        self.baseURLs = urls.isEmpty ? ["http://127.0.0.1:9000"] : urls
        self.credentials = credentials
        self.environment = environment
        self.caFile = caFile.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The URL of `segments` and `query` on the node at `base`.
    func url(_ base: String, _ segments: [String], _ query: [(String, String?)]) throws(ClientError) -> URL {
        guard var components = URLComponents(string: base), components.scheme != nil else {
            throw ClientError(.badURL, "\(base) is not a URL")
        }
        var pathAllowed = CharacterSet.urlPathAllowed
        pathAllowed.remove(charactersIn: "/;?#%")
        let prefix = components.percentEncodedPath.hasSuffix("/") ? String(components.percentEncodedPath.dropLast()) : components.percentEncodedPath
        components.percentEncodedPath = prefix + segments.map { "/" + ($0.addingPercentEncoding(withAllowedCharacters: pathAllowed) ?? $0) }.joined()
        var queryAllowed = CharacterSet.urlQueryAllowed
        queryAllowed.remove(charactersIn: "&=+#%")
        let items = query.compactMap { name, value in value.map { name + "=" + ($0.addingPercentEncoding(withAllowedCharacters: queryAllowed) ?? $0) }
        }
        components.percentEncodedQuery = items.isEmpty ? nil : items.joined(separator: "&")
        guard let url = components.url else { throw ClientError(.badURL, "cannot build a URL from \(base)") }
        return url
    }

    /// The request's headers: the API key when there is one, the user key when there is one
    /// (refused before sending when the request needs it and there is none).
    func headers(needsUserKey: Bool) throws(ClientError) -> [String: String] {
        var headers: [String: String] = [:]
        if let apiKey = credentials.apiKey { headers["X-API-Key"] = apiKey }
        if let token = credentials.token { headers["Authorization"] = "Bearer " + token }
        if let userKey = credentials.userKey {
            headers["X-User-Key"] = userKey
        } else if needsUserKey {
            throw ClientError(
                .credentials,
                "a user key is needed: set \(Credentials.userKeyVariable), or put it in \(Credentials.fileVariable) (a 0600 file)"
            )
        }
        return headers
    }

    /// Sends `request` and returns the body of a 2xx answer. A node that cannot be reached is
    /// skipped for the next one; an idempotent request also moves on from a node answering 503.
    public func send(_ request: ClientRequest) async throws(ClientError) -> Data {
        let (segments, query) = request.target(environment: environment)
        var headers = try headers(needsUserKey: request.needsUserKey).merging(request.extraHeaders) { $1 }
        let body = request.body(environment: environment).map { Data(JSONWriter.encode($0)) }
        if body != nil { headers["Content-Type"] = "application/json" }
        var lastError = ClientError(.unreachable, "no node to ask")
        for base in baseURLs {
            let target = try url(base, segments, query)
            let reply: CurlHTTP.Reply
            do {
                reply = try await exchange(request.method, target, headers: headers, body: body).get()
            } catch {
                lastError = ClientError(.unreachable, "cannot reach \(base): \(error.reason)")
                continue
            }
            guard (200..<300).contains(reply.status) else {
                let failure = ClientError(.refused(status: reply.status), Self.detail(reply.body))
                if reply.status == 503 && request.idempotent {
                    lastError = failure
                    continue
                }
                throw failure
            }
            return reply.body
        }
        throw lastError
    }

    /// One HTTP exchange, on a thread of its own (libcurl blocks), bounded by `timeout`.
    func exchange(_ method: String, _ url: URL, headers: [String: String], body: Data?) async -> Result<CurlHTTP.Reply, CurlFailure> {
        let lines = headers.map { "\($0.key): \($0.value)" }
        let (millis, caFile) = (Int(min(max(timeout, 0.1), 86_400) * 1000), caFile)
        return await withCheckedContinuation { done in
            DispatchQueue.global().async {
                done.resume(
                    returning: CurlHTTP.perform(
                        method: method,
                        url: url.absoluteString,
                        headers: lines,
                        body: body,
                        timeoutMillis: millis,
                        caFile: caFile
                    )
                )
            }
        }
    }

    /// The `detail` of an error body, or its first bytes.
    static func detail(_ data: Data) -> String {
        (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["detail"] as? String
            ?? String(decoding: data.prefix(500), as: UTF8.self)
    }

    /// `GET /audit/verify`, decoded.
    public func verifyAudit() async throws(ClientError) -> AuditVerification {
        let data = try await send(.auditVerify)
        do {
            return try JSONDecoder().decode(AuditVerification.self, from: data)
        } catch {
            throw ClientError(.unreachable, "unexpected reply to /audit/verify")
        }
    }
}
