import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCore
import SecureConfCrypto
import SecureConfJSON
import SecureConfStore

/// Reading and validating what a client sent: query strings, path keys, credentials, bodies.
enum RequestInput {
    static let userKeyHeader = HTTPField.Name("X-User-Key")!
    static let apiKeyHeader = HTTPField.Name("X-API-Key")!
    static let defaultEnvironment = "default"

    /// Percent-decodes strictly (and `+` as space in queries); nil on bad escapes or invalid UTF-8.
    static func percentDecode<S: StringProtocol>(_ text: S, plusIsSpace: Bool) -> String? {
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        while let b = iterator.next() {
            if b == UInt8(ascii: "%") {
                guard let h = iterator.next().flatMap(hex), let l = iterator.next().flatMap(hex) else { return nil }
                out.append(h << 4 | l)
            } else if plusIsSpace && b == UInt8(ascii: "+") {
                out.append(0x20)
            } else {
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    /// The query's parameters; a repeated name keeps its last value.
    static func query(_ request: Request) throws(ServiceError) -> [String: String] {
        guard let raw = request.uri.query, !raw.isEmpty else { return [:] }
        var out: [String: String] = [:]
        for pair in raw.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = percentDecode(parts[0], plusIsSpace: true),
                let value = percentDecode(parts.count > 1 ? parts[1] : "", plusIsSpace: true)
            else {
                throw ServiceError.badRequest("Malformed query string: invalid percent-encoding or UTF-8")
            }
            out[name] = value
        }
        return out
    }

    /// A configuration key: 1–255 characters (Unicode scalars), no control characters, no `/`.
    static func validateKey(_ key: String) throws(ServiceError) -> String {
        if let problem = EntryNames.keyProblem(key) { throw ServiceError.unprocessable(problem) }
        return key
    }

    /// The `{key}` path parameter, percent-decoded and validated.
    static func pathKey(_ context: some RequestContext) throws(ServiceError) -> String {
        guard let raw = context.parameters.get("key") else { throw ServiceError.badRequest("Missing key in path") }
        guard let key = percentDecode(raw, plusIsSpace: false) else {
            throw ServiceError.badRequest("Key in path has invalid percent-encoding or UTF-8")
        }
        return try validateKey(key)
    }

    /// What a `/configs/{key}…` request addresses: the key from the path, the query, and the
    /// environment (`default` when not given).
    static func addressedKey(
        _ request: Request,
        _ context: some RequestContext
    ) throws(ServiceError) -> (key: String, query: [String: String], environment: String) {
        let key = try pathKey(context)
        let query = try query(request)
        return (key, query, try environment(query["environment"]))
    }

    /// What a `/configs/{key}…` request addresses (in the tenant of its token), and its query.
    static func addressedEntry(
        _ request: Request,
        _ context: some AuditedRequestContext
    ) throws(ServiceError) -> (EntryAddress, query: [String: String]) {
        let (key, query, environment) = try addressedKey(request, context)
        return (entryAddress(context, environment: environment, key: key), query)
    }

    /// An entry of the request's tenant (its token's; `default` without one).
    static func entryAddress(_ context: some AuditedRequestContext, environment: String, key: String) -> EntryAddress {
        EntryAddress(tenant: context.principal?.tenant ?? Revision.defaultTenant, environment: environment, key: key)
    }

    enum UserKeyNeed { case required, optional }

    /// Who calls: the user key (checked for presence, encoding and length; absent is allowed
    /// with `.optional`), the client's address, the request's audit note, and, for a
    /// caller without a user key, whether it holds the API key.
    static func caller(
        _ request: Request,
        _ context: some AuditedRequestContext,
        _ node: SecureConfNode,
        userKey need: UserKeyNeed = .required
    ) throws(ServiceError) -> Caller {
        let minimum = node.configuration.minUserKeyLength
        let userKey: String? = need == .optional && request.headers[userKeyHeader] == nil ? nil : try userKey(request, minimumLength: minimum)
        var holdsAPIKey = false
        if need == .optional, let expected = node.configuration.apiKey, let given = request.headers[apiKeyHeader] {
            holdsAPIKey = OpenSSL.constantTimeEquals(OpenSSL.sha256(Array(given.utf8)), OpenSSL.sha256(Array(expected.utf8)))
        }
        return Caller(
            userKey: userKey,
            client: context.clientIP,
            audit: context.audit,
            holdsAPIKey: holdsAPIKey || context.principal?.isAdmin == true,
            logger: context.logger,
            principal: context.principal
        )
    }

    /// `mode` of reads and lists, as OpenSecureConf 3.x takes it: `short` leaves out
    /// `created_at`/`updated_at`, `full` keeps them; absent keeps them (SecureConf's and
    /// OpenSecureConf 2.x's shape).
    static func includesTimestamps(_ query: [String: String]) throws(ServiceError) -> Bool {
        switch query["mode"] {
        case nil, "", "full": return true
        case "short": return false
        case let other?: throw ServiceError.unprocessable("mode must be short or full, not '\(other.prefix(40))'")
        }
    }

    /// A yes/no query parameter: `true` or `false` (absent: `false`; anything else 422).
    static func flag(_ query: [String: String], _ name: String) throws(ServiceError) -> Bool {
        switch query[name] {
        case nil, "", "false": return false
        case "true": return true
        case let other?: throw ServiceError.unprocessable("\(name) must be true or false, not '\(other.prefix(40))'")
        }
    }

    /// An RFC 3339 time as microseconds since the epoch (422 when missing or malformed).
    static func time(_ raw: String?, _ name: String) throws(ServiceError) -> Int64 {
        guard let raw, !raw.isEmpty else { throw ServiceError.unprocessable("\(name) is required (an RFC 3339 time such as 2025-01-31T12:00:00Z)") }
        guard let micros = RFC3339.parseMicros(raw) else {
            throw ServiceError.unprocessable("\(name) must be an RFC 3339 time such as 2025-01-31T12:00:00Z or 2025-01-31T13:00:00.5%2B01:00")
        }
        return micros
    }

    /// A body's optional `category`: validated, and an empty one is no category.
    static func category(_ body: JSONValue) throws(ServiceError) -> String? {
        guard let name = try optionalString(body, "category"), !name.isEmpty else { return nil }
        return try validateName(name, field: "category")
    }

    /// Environment and category names: at most 100 characters (Unicode scalars), no control characters.
    static func validateName(_ value: String, field: String) throws(ServiceError) -> String {
        if let problem = EntryNames.nameProblem(value, field: field) { throw ServiceError.unprocessable(problem) }
        return value
    }

    /// The environment a request addresses: the parameter if given and non-empty, else `default`.
    static func environment(_ value: String?) throws(ServiceError) -> String {
        guard let value, !value.isEmpty else { return defaultEnvironment }
        return try validateName(value, field: "environment")
    }

    enum HeaderValue {
        case absent, undecodable
        case value(String)
    }

    /// A header's bytes read as Latin-1, one character per byte, as OpenSecureConf's server
    /// (Starlette) reads them, so a key's UTF-8 (what PBKDF2 is given) matches
    /// OpenSecureConf's. The HTTP parser below us has already replaced bytes that are not
    /// UTF-8 with U+FFFD, which would let different keys collide: such values are refused.
    static func latin1Header(_ request: Request, _ name: HTTPField.Name) -> HeaderValue {
        guard let field = request.headers.first(where: { $0.name == name }) else { return .absent }
        var scalars = String.UnicodeScalarView()
        let replaced: Bool = field.withUnsafeBytesOfValue { bytes in
            var replaced = false
            for (i, b) in bytes.enumerated() {
                if b == 0xEF, i + 2 < bytes.count, bytes[i + 1] == 0xBF, bytes[i + 2] == 0xBD { replaced = true }
                scalars.append(Unicode.Scalar(b))
            }
            return replaced
        }
        return replaced ? .undecodable : .value(String(scalars))
    }

    /// The caller's user key, present and long enough, else 401.
    static func userKey(_ request: Request, minimumLength: Int, header: HTTPField.Name = userKeyHeader) throws(ServiceError) -> String {
        let key: String
        switch latin1Header(request, header) {
        case .absent:
            if header == userKeyHeader { throw ServiceError.missingUserKey }
            throw ServiceError.unprocessable("\(header.rawName) header is required")
        case .undecodable:
            throw ServiceError(.undecodableUserKey, "\(header.rawName) holds bytes that are not UTF-8; use an ASCII or UTF-8 key")
        case .value(let v): key = v
        }
        guard key.unicodeScalars.count >= minimumLength else {
            if header == userKeyHeader { throw ServiceError.shortUserKey(minimumLength) }
            throw ServiceError.unprocessable("\(header.rawName) must be at least \(minimumLength) characters long")
        }
        return key
    }

    /// `POST /rekey`'s new user key (a header, as the user key is: never in a URL or a log).
    static var newUserKeyHeader: HTTPField.Name { HTTPField.Name("X-New-User-Key")! }

    /// The body as a JSON object, within the size limit and nesting depth.
    static func jsonObject(_ request: Request, maxBytes: Int) async throws -> JSONValue {
        guard let object = try await optionalJSONObject(request, maxBytes: maxBytes) else {
            throw ServiceError.badRequest("Request body is empty; expected a JSON object")
        }
        return object
    }

    /// The body as a JSON object, or nil when there is no body.
    static func optionalJSONObject(_ request: Request, maxBytes: Int) async throws -> JSONValue? {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBytes {
            throw ServiceError(.bodyTooLarge, "Request body too large (limit \(maxBytes) bytes)")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: maxBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw ServiceError(.bodyTooLarge, "Request body too large (limit \(maxBytes) bytes)")
        } catch {
            throw ServiceError.badRequest("Request body could not be read")
        }
        guard buffer.readableBytes > 0 else { return nil }
        let bytes = buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            throw ServiceError.badRequest(error.description)
        }
        guard case .object = value else { throw ServiceError.unprocessable("Request body must be a JSON object, not \(value.typeName)") }
        return value
    }

    /// An optional string member (null or absent gives nil).
    static func optionalString(_ body: JSONValue, _ name: String) throws(ServiceError) -> String? {
        guard let v = body[name], !v.isNull else { return nil }
        guard let s = v.stringValue else { throw ServiceError.unprocessable("\(name) must be a string or null, not \(v.typeName)") }
        return s
    }
}

/// The request's id: the client's `X-Request-ID` when it is a sane token, else Hummingbird's.
/// `ObservabilityMiddleware` puts it on the request's logger; the audit record and the
/// response's `X-Request-ID` carry the same.
enum RequestID {
    static let metadataKey = "request_id"

    /// The id already on the request's logger, else computed.
    static func current(_ request: Request, context: some RequestContext) -> String {
        if case .string(let id)? = context.logger[metadataKey: metadataKey] { return id }
        return of(request, context: context)
    }

    static func of(_ request: Request, context: some RequestContext) -> String {
        if let name = AuditActions.requestIDHeader, let given = request.headers[name], (1...128).contains(given.utf8.count),
            given.utf8.allSatisfy({ b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                    || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".") || b == UInt8(ascii: ":")
            })
        {
            return given
        }
        if let id = context.logger[metadataKey: "hb.request.id"]?.description { return id }
        return Hex.encode(OpenSSL.randomBytes(8))
    }

}
