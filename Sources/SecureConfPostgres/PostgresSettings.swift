import Foundation

/// Where a node's PostgreSQL is, from `OSC_DATABASE_URL`
/// (`postgres://user:password@host:port/db?sslmode=…`, also `postgresql://`, with a host list
/// `host1:5432,host2:5432` for a primary and its standbys), `OSC_DATABASE_HOSTS` and
/// `OSC_DATABASE_PASSWORD_FILE`. The password is never part of `description`.
public struct PostgresSettings: Sendable, Equatable, CustomStringConvertible {
    public struct Host: Sendable, Equatable, CustomStringConvertible {
        public var name: String
        public var port: Int
        public var description: String { name.contains(":") ? "[\(name)]:\(port)" : "\(name):\(port)" }
    }

    /// libpq's `sslmode`: how the connection is encrypted and the server checked.
    public enum SSLMode: String, Sendable, Equatable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public var hosts: [Host]
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode = .prefer
    /// CA certificates to check the server against (`sslrootcert`; verify-ca and verify-full).
    public var sslRootCert: String?
    /// Connections this node keeps open at most (`pool_max`, default 16).
    public var maxConnections = 16
    /// Seconds to open a connection before a host counts as down (`connect_timeout`, default 5).
    public var connectTimeoutSeconds = 5.0

    public var description: String {
        "postgres://\(user)@\(hosts.map(\.description).joined(separator: ","))/\(database)?sslmode=\(sslMode.rawValue)"
    }

    /// Why a URL is not one, or the settings it names. `problem` never quotes the password.
    public static func parse(url raw: String, hosts hostList: String? = nil, passwordFile: String? = nil) -> Result<PostgresSettings, Problem> {
        do throws(Problem) {
            return .success(try parsed(url: raw, hosts: hostList, passwordFile: passwordFile))
        } catch {
            return .failure(error)
        }
    }

    /// What is wrong, and with which variable.
    public struct Problem: Error, Equatable, CustomStringConvertible {
        public var variable: String
        public var problem: String
        public var description: String { "\(variable): \(problem)" }
    }

    static func parsed(url raw: String, hosts hostList: String?, passwordFile: String?) throws(Problem) -> PostgresSettings {
        func fail(_ why: String, _ variable: String = "OSC_DATABASE_URL") -> Problem { Problem(variable: variable, problem: why) }
        guard raw.utf8.count <= 4096 else { throw fail("longer than 4096 bytes") }
        var rest = Substring(raw)
        guard let schemeEnd = rest.range(of: "://") else { throw fail("is not a URL: expected postgres://user:password@host:port/database") }
        let scheme = rest[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "postgres" || scheme == "postgresql" else { throw fail("the scheme is not postgres or postgresql") }
        rest = rest[schemeEnd.upperBound...]
        var user = "postgres"
        var password: String?
        // The user information ends at the last '@', before anything else is split: a password
        // holding '/', '?' or '#' unescaped must never end up in a host, a path or a parameter
        // (and so in an error message).
        // The user information ends at the last '@' before the parameters (a '@' in a
        // parameter, say a certificate path, is not the password's end). A password holding
        // '?' must be percent-encoded, as libpq requires; nothing of the URL is quoted in errors.
        var authority = rest
        let beforeParameters = rest[..<(rest.firstIndex(of: "?") ?? rest.endIndex)]
        if let at = beforeParameters.lastIndex(of: "@") {
            let info = rest[..<at]
            authority = rest[rest.index(after: at)...]
            let parts = info.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let u = String(parts[0]).removingPercentEncoding, !u.isEmpty else { throw fail("the user name is empty or badly escaped") }
            user = u
            if parts.count == 2 {
                guard let p = String(parts[1]).removingPercentEncoding else { throw fail("the password is badly escaped (percent-encode it)") }
                password = p
            }
        }
        var query = Substring("")
        if let q = authority.firstIndex(of: "?") {
            query = authority[authority.index(after: q)...]
            authority = authority[..<q]
        }
        var path = Substring("")
        if let slash = authority.firstIndex(of: "/") {
            path = authority[authority.index(after: slash)...]
            authority = authority[..<slash]
        }
        guard let database = String(path).removingPercentEncoding else { throw fail("the database name is badly escaped") }
        var settings = PostgresSettings(hosts: [], user: user, password: password, database: database.isEmpty ? user : database)
        guard settings.database.utf8.count <= 63, !settings.database.contains("\0") else {
            throw fail("the database name is not a PostgreSQL name (at most 63 bytes)")
        }
        guard user.utf8.count <= 63, !user.contains("\0") else { throw fail("the user name is not a PostgreSQL name (at most 63 bytes)") }
        // OSC_DATABASE_HOSTS replaces the URL's hosts, which are then not looked at.
        settings.hosts = hostList == nil ? try hosts(String(authority), variable: "OSC_DATABASE_URL", quote: false) : []
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(kv[0])
            let value = kv.count == 2 ? (String(kv[1]).removingPercentEncoding ?? "") : ""
            switch name {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw fail("sslmode is not one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                settings.sslMode = mode
            case "sslrootcert":
                settings.sslRootCert = value
            case "pool_max":
                guard let n = Int(value), (1...256).contains(n) else { throw fail("pool_max is not 1 to 256") }
                settings.maxConnections = n
            case "connect_timeout":
                guard let n = Double(value), n.isFinite, (0.1...300).contains(n) else {
                    throw fail("connect_timeout is not 0.1 to 300 seconds")
                }
                settings.connectTimeoutSeconds = n
            case "target_session_attrs", "application_name":
                // The writable host is always what a node looks for; the name is its own.
                continue
            default:
                throw fail("a parameter is not one of sslmode, sslrootcert, pool_max, connect_timeout")
            }
        }
        if settings.sslMode == .verifyCA || settings.sslMode == .verifyFull, settings.sslRootCert == nil {
            throw fail("sslmode=\(settings.sslMode.rawValue) needs sslrootcert=/path/to/ca.pem")
        }
        if let hostList {
            settings.hosts = try hosts(hostList, variable: "OSC_DATABASE_HOSTS", quote: true)
        }
        if let passwordFile {
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                throw fail("cannot read \(passwordFile)", "OSC_DATABASE_PASSWORD_FILE")
            }
            let trimmed = text.trimmingCharacters(in: .newlines)
            guard !trimmed.isEmpty, trimmed.utf8.count <= 1024 else {
                throw fail("\(passwordFile) is empty or longer than 1024 bytes", "OSC_DATABASE_PASSWORD_FILE")
            }
            settings.password = trimmed
        }
        return settings
    }

    /// `host[:port]` items separated by commas (IPv6 in brackets), default port 5432, at most 8.
    /// `quote`: whether an error may show the item (not for the URL's, which a misplaced
    /// password may have ended up in).
    static func hosts(_ text: String, variable: String, quote: Bool) throws(Problem) -> [Host] {
        var out: [Host] = []
        for raw in text.split(separator: ",") {
            let trimmed = raw.trimmingCharacters(in: .whitespaces)
            let item = trimmed
            let shown = quote ? "'\(trimmed.prefix(80))'" : "a host"
            guard !item.isEmpty else { continue }
            var name = Substring(item)
            var port = 5432
            if name.hasPrefix("[") {
                guard let close = name.firstIndex(of: "]") else {
                    throw Problem(variable: variable, problem: "\(shown) has an unclosed '['")
                }
                let after = name[name.index(after: close)...]
                name = name[name.index(after: name.startIndex)..<close]
                if after.hasPrefix(":") {
                    guard let p = Int(after.dropFirst()), (1...65535).contains(p) else {
                        throw Problem(variable: variable, problem: "\(shown) has no valid port")
                    }
                    port = p
                } else if !after.isEmpty {
                    throw Problem(variable: variable, problem: "\(shown) is not host:port")
                }
            } else if let colon = name.lastIndex(of: ":") {
                guard let p = Int(name[name.index(after: colon)...]), (1...65535).contains(p) else {
                    throw Problem(variable: variable, problem: "\(shown) has no valid port")
                }
                port = p
                name = name[..<colon]
            }
            guard !name.isEmpty, name.utf8.count <= 253, !name.contains(where: { $0 == "/" || $0 == "@" || $0.isWhitespace }) else {
                throw Problem(variable: variable, problem: "\(shown) is not a host name")
            }
            out.append(Host(name: String(name), port: port))
        }
        guard !out.isEmpty else { throw Problem(variable: variable, problem: "names no host") }
        guard out.count <= 8 else { throw Problem(variable: variable, problem: "names \(out.count) hosts; at most 8") }
        return out
    }
}
