import Foundation
import SecureConfCluster
import SecureConfPostgres

/// A configuration value that cannot be used; `description` is the one line a user sees.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let variable: String
    public let problem: String
    public var description: String { "\(variable): \(problem)" }
}

/// Everything a node needs, parsed and validated once at start-up from OpenSecureConf's
/// `OSC_*` variables (environment, then a `.env` file, with command-line overrides on top).
public struct NodeConfiguration: Sendable {
    public enum LogFormat: String, Sendable { case json, console }
    public enum ClusterMode: String, Sendable { case replica, federated }

    public var host = "127.0.0.1"
    public var port = 9000
    public var databasePath = "data/configurations.db"
    /// PostgreSQL instead of SQLite (`OSC_DATABASE_URL`); nil: SQLite at `databasePath`.
    public var database: PostgresSettings?
    /// What the store is called in messages: the SQLite file, or the database without its password.
    public var databaseLabel: String { database.map(\.description) ?? databasePath }
    public var saltFilePath = "data/encryption.salt"
    public var minUserKeyLength = 8
    public var apiKeyRequired = false
    public var apiKey: String?
    public var logLevel = "INFO"
    public var logFormat = LogFormat.json
    public var logFile: String?
    public var logMaxBytes = 100 * 1024 * 1024
    public var logBackupCount = 5
    public var workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
    public var keyCacheSize = 1024
    public var keyCacheTTLSeconds = 300.0
    public var kdfMaxQueue = 64
    public var kdfIterations: UInt32 = 480_000
    public var maxBodyBytes = 1024 * 1024
    public var idleTimeoutSeconds = 60.0
    public var authFailureLimit = 20
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?
    /// The passphrase of an encrypted `tlsKeyFile` (`OSC_SSL_KEYFILE_PASSWORD`); never logged.
    public var tlsKeyPassword: String?
    public var clusterTLSCAFile: String?
    public var authFailureWindowSeconds = 60.0
    /// Revisions kept per (environment, key); nil keeps every one.
    public var maxVersions: Int?
    /// Seconds a tombstone is kept before its deleted key's history is collected; nil: never.
    public var tombstoneHorizonSeconds: Double?
    /// Current entries kept in memory for warm reads (ciphertext only); 0 turns the cache off.
    public var readCacheEntries = 50_000
    /// Whether requests are recorded in the audit trail.
    public var auditEnabled = true

    public var clusterEnabled = false
    public var clusterMode = ClusterMode.replica
    public var clusterNodeID: String?
    public var clusterNodes: [String] = []
    /// Where `clusterNodes` came from when not `OSC_CLUSTER_NODES` (re-read on SIGHUP).
    public var clusterNodesFile: String?
    public var clusterSyncIntervalSeconds = 30.0
    public var clusterHealthIntervalSeconds = 5.0
    public var clusterPeerTimeoutSeconds = 5.0
    public var clusterWriteQuorum = "1"
    public var clusterAllowInsecure = false
    public var clusterSaltWaitSeconds = 120.0
    /// The peer credential's secret (`OSC_CLUSTER_SECRET` or `OSC_CLUSTER_SECRET_FILE`).
    public var clusterSecret: String?
    public var clusterAcceptAPIKeyPeers = false
    public var clusterMaxClockSkewSeconds = 5.0
    /// Seconds a client has to send a whole request, headers and body.
    public var requestTimeoutSeconds = 30.0
    /// Browser origins allowed to call the node (`CORS_ORIGINS`).
    public var corsOrigins: CORSOrigins = .any
    /// Open connections at most, overall; nil: from the file-descriptor limit.
    public var maxConnections: Int?
    public var maxConnectionsPerClient = 128
    /// The largest request line and header block accepted (`OSC_MAX_HEADER_BYTES`): large
    /// enough for an OpenSecureConf backup of a megabyte in `/import`'s query string.
    public var maxHeaderBytes = 2 * 1024 * 1024
    /// Change-event streams at most (`OSC_SSE_MAX_SUBSCRIBERS`).
    public var sseMaxSubscribers = 1000
    /// Events a subscriber may fall behind before it is dropped (`OSC_SSE_QUEUE_SIZE`).
    public var sseQueueSize = 256
    /// Seconds between keep-alive comments on an idle stream (`OSC_SSE_KEEPALIVE_SECONDS`).
    public var sseKeepAliveSeconds = 15.0
    /// Who may do what (`OSC_AUTH_MODE`): the API key alone, or users and tokens.
    public enum AuthMode: String, Sendable { case apikey, tokens }
    public var authMode = AuthMode.apikey
    /// Lifetime of a login token in seconds (`OSC_TOKEN_TTL`).
    public var tokenTTLSeconds = 3600
    /// Minutes without activity after which the web console forgets its keys (`OSC_UI_IDLE_MINUTES`).
    public var uiIdleMinutes = 15

    public init() {}

    public var tlsEnabled: Bool { tlsCertificateFile != nil && tlsKeyFile != nil }

    /// The largest ciphertext a node writes or accepts from a peer: what the largest body can
    /// become once escaped and encrypted, within what one cluster message carries (48 MiB).
    public var maxCiphertextBytes: Int { min(8 * maxBodyBytes + 4096, 48 * 1024 * 1024) }

    /// The id this node reports: `OSC_CLUSTER_NODE_ID`, else `host:port`.
    public var nodeID: String { clusterNodeID ?? "\(host):\(port)" }

    /// Every variable the node reads, with its meaning (the README table is generated from the same list).
    public static let variables: [(name: String, meaning: String)] = [
        ("OSC_HOST", "address to listen on (default 127.0.0.1)"),
        ("OSC_HOST_PORT", "port to listen on (default 9000)"),
        ("OSC_DATABASE_PATH", "SQLite database file (default data/configurations.db)"),
        (
            "OSC_DATABASE_URL",
            "postgres://user:password@host:port/db?sslmode=…: keep the data in PostgreSQL instead of SQLite, shared by every node given the same URL (README: PostgreSQL)"
        ),
        ("OSC_DATABASE_HOSTS", "host:port list of the PostgreSQL primary and its standbys, in place of the URL's host; the writable one is used"),
        ("OSC_DATABASE_PASSWORD_FILE", "file holding the PostgreSQL password, in place of the URL's"),
        ("OSC_SALT_FILE_PATH", "64-byte salt file (default data/encryption.salt)"),
        ("OSC_MIN_USER_KEY_LENGTH", "shortest accepted X-User-Key (default 8)"),
        ("OSC_API_KEY_REQUIRED", "require X-API-Key on data and cluster endpoints (default false)"),
        ("OSC_API_KEY", "the API key clients must send when required"),
        ("OSC_LOG_LEVEL", "TRACE, DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)"),
        ("OSC_LOG_FORMAT", "json or console (default json)"),
        ("OSC_LOG_FILE", "also write logs to this file, rotated by size"),
        ("OSC_LOG_MAX_BYTES", "rotate the log file at this size (default 104857600)"),
        ("OSC_LOG_BACKUP_COUNT", "rotated log files kept (default 5)"),
        ("OSC_WORKERS", "HTTP event-loop threads (default: number of cores)"),
        ("OSC_KEY_CACHE_SIZE", "derived keys kept in memory (default 1024)"),
        ("OSC_KEY_CACHE_TTL", "seconds a derived key stays cached (default 300)"),
        ("OSC_KDF_MAX_QUEUE", "key derivations allowed to wait beyond the running ones before 503 (default 64)"),
        ("OSC_KDF_ITERATIONS", "PBKDF2 iterations (default 480000, OpenSecureConf's; change only for a new store)"),
        ("OSC_MAX_BODY_BYTES", "largest request body accepted (default 1048576)"),
        ("OSC_IDLE_TIMEOUT", "seconds before an idle connection is closed (default 60)"),
        ("OSC_AUTH_FAILURE_LIMIT", "failed user-key attempts per client address and window before 429 on uncached keys (default 20; 0 disables)"),
        ("OSC_AUTH_FAILURE_WINDOW", "seconds of the failed-attempt window (default 60)"),
        ("OSC_TLS_CERT_FILE", "PEM certificate (chain): serve HTTPS, and talk HTTPS to peers"),
        ("OSC_TLS_KEY_FILE", "PEM private key for OSC_TLS_CERT_FILE"),
        (
            "OSC_HTTPS_ENABLED",
            "OpenSecureConf's switch: true serves HTTPS with OSC_SSL_CERTFILE and OSC_SSL_KEYFILE (default ./cert.pem, ./key.pem); false ignores them (default false)"
        ),
        ("OSC_SSL_CERTFILE", "OpenSecureConf's certificate file, with OSC_HTTPS_ENABLED=true"),
        ("OSC_SSL_KEYFILE", "OpenSecureConf's private key file, with OSC_HTTPS_ENABLED=true"),
        ("OSC_SSL_KEYFILE_PASSWORD", "the passphrase of an encrypted private key (PEM, PKCS#8 or traditional)"),
        ("OSC_CLUSTER_TLS_CA_FILE", "PEM CA bundle peers' certificates are verified against (default: the system store; alias OSC_SSL_CA_CERTS)"),
        ("OSC_MAX_VERSIONS", "revisions kept per key, oldest pruned first, the current one always kept (default: unset, keep all; 0 also keeps all)"),
        (
            "OSC_TOMBSTONE_HORIZON",
            "seconds after a delete (once every peer holds it) when the deleted key's history is collected; a node away longer refills from its peers (default: unset, keep every revision)"
        ),
        (
            "OSC_READ_CACHE_ENTRIES",
            "current entries kept in memory for reads, as ciphertext, at most 32 MB of it, kept exact by every write (default 50000; 0 turns it off)"
        ),
        ("OSC_AUDIT_ENABLED", "record every configuration, history, cluster and audit request in the hash-chained audit trail (default true)"),
        ("OSC_CLUSTER_ENABLED", "run as part of a cluster (default false)"),
        ("OSC_CLUSTER_MODE", "replica or federated (default replica)"),
        ("OSC_CLUSTER_NODE_ID", "this node's id, host:port (default OSC_HOST:OSC_HOST_PORT)"),
        ("OSC_CLUSTER_NODES", "comma-separated peers, host:port (re-read from the .env file on SIGHUP)"),
        ("OSC_CLUSTER_NODES_FILE", "file listing the cluster's nodes instead (host:port, comma- or line-separated, # comments; re-read on SIGHUP)"),
        ("OSC_CLUSTER_SYNC_INTERVAL", "seconds between anti-entropy rounds (default 30)"),
        ("OSC_CLUSTER_HEALTH_INTERVAL", "seconds between peer health checks (default 5)"),
        ("OSC_CLUSTER_PEER_TIMEOUT", "seconds before a request to a peer times out (default 5)"),
        ("OSC_CLUSTER_WRITE_QUORUM", "nodes holding a write before it is acknowledged: 1, majority or all (default 1)"),
        ("OSC_CLUSTER_SALT_WAIT", "seconds a node without a salt waits for the cluster's (default 120)"),
        ("OSC_CLUSTER_ALLOW_INSECURE", "allow a cluster without OSC_API_KEY_REQUIRED=true and OSC_API_KEY (default false; never in production)"),
        (
            "OSC_CLUSTER_SECRET",
            "the peer credential, at least 32 characters, the same on every node: signs every node-to-node message; without it peers authenticate with the clients' OSC_API_KEY (insecure, for OpenSecureConf compatibility)"
        ),
        ("OSC_CLUSTER_SECRET_FILE", "file holding OSC_CLUSTER_SECRET (one line)"),
        (
            "OSC_CLUSTER_ACCEPT_API_KEY_PEERS",
            "with OSC_CLUSTER_SECRET: also accept unsigned peers holding OSC_API_KEY, only while upgrading a running cluster (default false)"
        ),
        (
            "OSC_CLUSTER_MAX_CLOCK_SKEW",
            "seconds a node's clock may run ahead of its peers' median, and a replicated revision's stamp ahead of the receiver's clock (default 5)"
        ),
        ("OSC_REQUEST_TIMEOUT", "seconds a client has to send a whole request, headers and body (default 30)"),
        ("OSC_MAX_CONNECTIONS", "open client connections at most (default: the file-descriptor limit less 128, at most 16384)"),
        ("OSC_MAX_CONNECTIONS_PER_CLIENT", "open connections at most from one client address (default 128)"),
        (
            "OSC_MAX_HEADER_BYTES",
            "largest request line plus headers accepted, in bytes (default 2097152: a 1 MB backup in /import's query string); more is refused with 400"
        ),
        ("OSC_SSE_MAX_SUBSCRIBERS", "change-event streams at most on this node; more get 503 (default 1000)"),
        ("OSC_SSE_QUEUE_SIZE", "events a subscriber may fall behind before it is dropped and told to resume (default 256)"),
        ("OSC_SSE_KEEPALIVE_SECONDS", "seconds between keep-alive comments on an idle event stream, 0.1 to 60 (default 15)"),
        (
            "OSC_AUTH_MODE",
            "apikey (default: the API key alone, as OpenSecureConf) or tokens (users, login and service tokens, policies; README: access control)"
        ),
        ("OSC_TOKEN_TTL", "seconds a login token is valid, 60 to 2592000 (default 3600)"),
        ("OSC_UI_IDLE_MINUTES", "minutes of inactivity after which the web console (/ui/) signs out, 1 to 1440 (default 15)"),
        ("CORS_ORIGINS", "browser origins allowed to call the node, comma-separated http(s)://host[:port] or * (default *; empty allows none)"),
    ]

    /// Parses `values` (merged environment); unknown `OSC_*` names are ignored.
    public static func parse(_ values: [String: String]) throws(ConfigurationError) -> NodeConfiguration {
        var c = NodeConfiguration()
        func value(_ name: String) -> String? {
            guard let raw = values[name]?.trimmingCharacters(in: .whitespaces), !raw.isEmpty else { return nil }
            return raw
        }
        func integer(_ name: String, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
            guard let raw = value(name) else { return nil }
            guard let n = Int(raw) else { throw ConfigurationError(variable: name, problem: "'\(raw)' is not a whole number") }
            guard range.contains(n) else {
                throw ConfigurationError(variable: name, problem: "\(n) is outside \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        func seconds(_ name: String) throws(ConfigurationError) -> Double? {
            guard let raw = value(name) else { return nil }
            guard let n = Double(raw), n.isFinite, n > 0 else {
                throw ConfigurationError(variable: name, problem: "'\(raw)' is not a positive number of seconds")
            }
            return n
        }
        func boolean(_ name: String) throws(ConfigurationError) -> Bool? {
            guard let raw = value(name) else { return nil }
            switch raw.lowercased() {
            case "true", "1", "yes", "on": return true
            case "false", "0", "no", "off": return false
            default: throw ConfigurationError(variable: name, problem: "'\(raw)' is not true or false")
            }
        }

        if let v = value("OSC_HOST") { c.host = v }
        if let v = try integer("OSC_HOST_PORT", 1...65535) { c.port = v }
        if let v = value("OSC_DATABASE_PATH") { c.databasePath = v }
        if let url = value("OSC_DATABASE_URL") {
            switch PostgresSettings.parse(url: url, hosts: value("OSC_DATABASE_HOSTS"), passwordFile: value("OSC_DATABASE_PASSWORD_FILE")) {
            case let .success(settings): c.database = settings
            case let .failure(problem): throw ConfigurationError(variable: problem.variable, problem: problem.problem)
            }
        } else if value("OSC_DATABASE_HOSTS") != nil || value("OSC_DATABASE_PASSWORD_FILE") != nil {
            throw ConfigurationError(variable: "OSC_DATABASE_URL", problem: "must be set with OSC_DATABASE_HOSTS or OSC_DATABASE_PASSWORD_FILE")
        }
        if let v = value("OSC_SALT_FILE_PATH") { c.saltFilePath = v }
        if let v = try integer("OSC_MIN_USER_KEY_LENGTH", 1...1024) { c.minUserKeyLength = v }
        if let v = try boolean("OSC_API_KEY_REQUIRED") { c.apiKeyRequired = v }
        c.apiKey = values["OSC_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        if let v = value("OSC_LOG_LEVEL") {
            guard LogLevelName.parse(v) != nil else {
                throw ConfigurationError(variable: "OSC_LOG_LEVEL", problem: "'\(v)' is not one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL")
            }
            c.logLevel = v.uppercased()
        }
        if let v = value("OSC_LOG_FORMAT") {
            guard let f = LogFormat(rawValue: v.lowercased()) else {
                throw ConfigurationError(variable: "OSC_LOG_FORMAT", problem: "'\(v)' is not json or console")
            }
            c.logFormat = f
        }
        c.logFile = value("OSC_LOG_FILE")
        if let v = try integer("OSC_LOG_MAX_BYTES", 4096...Int(Int32.max)) { c.logMaxBytes = v }
        if let v = try integer("OSC_LOG_BACKUP_COUNT", 0...100) { c.logBackupCount = v }
        if let v = try integer("OSC_WORKERS", 1...256) { c.workers = v }
        if let v = try integer("OSC_KEY_CACHE_SIZE", 0...1_000_000) { c.keyCacheSize = v }
        if let v = try seconds("OSC_KEY_CACHE_TTL") { c.keyCacheTTLSeconds = v }
        if let v = try integer("OSC_KDF_MAX_QUEUE", 0...100_000) { c.kdfMaxQueue = v }
        if let v = try integer("OSC_KDF_ITERATIONS", 1...100_000_000) { c.kdfIterations = UInt32(v) }
        if let v = try integer("OSC_MAX_BODY_BYTES", 1024...(64 * 1024 * 1024)) { c.maxBodyBytes = v }
        if let v = try seconds("OSC_IDLE_TIMEOUT") { c.idleTimeoutSeconds = v }
        if let v = try integer("OSC_AUTH_FAILURE_LIMIT", 0...1_000_000) { c.authFailureLimit = v }
        if let v = try seconds("OSC_AUTH_FAILURE_WINDOW") { c.authFailureWindowSeconds = v }
        if let v = try integer("OSC_MAX_VERSIONS", 0...1_000_000) { c.maxVersions = v == 0 ? nil : v }
        if let v = try integer("OSC_READ_CACHE_ENTRIES", 0...10_000_000) { c.readCacheEntries = v }
        if let v = try boolean("OSC_AUDIT_ENABLED") { c.auditEnabled = v }

        func readableFile(_ names: [String]) throws(ConfigurationError) -> String? {
            for name in names {
                guard let path = value(name) else { continue }
                guard FileManager.default.isReadableFile(atPath: path) else {
                    throw ConfigurationError(variable: name, problem: "cannot read \(path)")
                }
                return path
            }
            return nil
        }
        // OpenSecureConf's OSC_SSL_* count only with its OSC_HTTPS_ENABLED=true, as there (its
        // defaults included); SecureConf's own OSC_TLS_* always do.
        let httpsEnabled = try boolean("OSC_HTTPS_ENABLED") ?? false
        c.tlsCertificateFile = try readableFile(["OSC_TLS_CERT_FILE"] + (httpsEnabled ? ["OSC_SSL_CERTFILE"] : []))
        c.tlsKeyFile = try readableFile(["OSC_TLS_KEY_FILE"] + (httpsEnabled ? ["OSC_SSL_KEYFILE"] : []))
        if httpsEnabled {
            for (name, fallback) in [("OSC_SSL_CERTFILE", "./cert.pem"), ("OSC_SSL_KEYFILE", "./key.pem")] {
                let chosen = name == "OSC_SSL_CERTFILE" ? c.tlsCertificateFile : c.tlsKeyFile
                guard chosen == nil else { continue }
                guard FileManager.default.isReadableFile(atPath: fallback) else {
                    throw ConfigurationError(variable: name, problem: "OSC_HTTPS_ENABLED=true but \(name) is not set and \(fallback) cannot be read")
                }
                if name == "OSC_SSL_CERTFILE" { c.tlsCertificateFile = fallback } else { c.tlsKeyFile = fallback }
            }
        }
        if let raw = values["OSC_SSL_KEYFILE_PASSWORD"], !raw.isEmpty { c.tlsKeyPassword = raw }
        c.clusterTLSCAFile = try readableFile(["OSC_CLUSTER_TLS_CA_FILE", "OSC_SSL_CA_CERTS"])
        if (c.tlsCertificateFile == nil) != (c.tlsKeyFile == nil) {
            throw ConfigurationError(
                variable: c.tlsCertificateFile == nil ? "OSC_TLS_CERT_FILE" : "OSC_TLS_KEY_FILE",
                problem: "TLS needs both a certificate and a key file"
            )
        }
        if let v = try boolean("OSC_CLUSTER_ENABLED") { c.clusterEnabled = v }
        if let v = value("OSC_CLUSTER_MODE") {
            guard let m = ClusterMode(rawValue: v.lowercased()) else {
                throw ConfigurationError(variable: "OSC_CLUSTER_MODE", problem: "'\(v)' is not replica or federated")
            }
            c.clusterMode = m
        }
        if let v = value("OSC_CLUSTER_NODE_ID") {
            guard isHostPort(v) else { throw ConfigurationError(variable: "OSC_CLUSTER_NODE_ID", problem: "'\(v)' is not host:port") }
            c.clusterNodeID = v
        }
        if let path = value("OSC_CLUSTER_NODES_FILE") {
            if value("OSC_CLUSTER_NODES") != nil {
                throw ConfigurationError(variable: "OSC_CLUSTER_NODES_FILE", problem: "set it or OSC_CLUSTER_NODES, not both")
            }
            guard let text = try? String(contentsOfFile: path, encoding: .utf8), text.utf8.count <= 1 << 20 else {
                throw ConfigurationError(variable: "OSC_CLUSTER_NODES_FILE", problem: "cannot read \(path) (UTF-8 text up to 1 MiB)")
            }
            c.clusterNodesFile = path
            c.clusterNodes = try nodeList(text, variable: "OSC_CLUSTER_NODES_FILE")
        } else if let v = value("OSC_CLUSTER_NODES") {
            c.clusterNodes = try nodeList(v, variable: "OSC_CLUSTER_NODES")
        }
        if let v = try seconds("OSC_CLUSTER_SYNC_INTERVAL") { c.clusterSyncIntervalSeconds = v }
        if let v = try seconds("OSC_TOMBSTONE_HORIZON") {
            guard (1...315_360_000).contains(v) else {
                throw ConfigurationError(variable: "OSC_TOMBSTONE_HORIZON", problem: "\(v) is outside 1 s to 10 years")
            }
            c.tombstoneHorizonSeconds = v
        }
        if let v = try seconds("OSC_CLUSTER_HEALTH_INTERVAL") { c.clusterHealthIntervalSeconds = v }
        if let v = try seconds("OSC_CLUSTER_PEER_TIMEOUT") { c.clusterPeerTimeoutSeconds = v }
        if let v = try seconds("OSC_CLUSTER_SALT_WAIT") { c.clusterSaltWaitSeconds = v }
        if let v = value("OSC_CLUSTER_WRITE_QUORUM") {
            guard ["1", "majority", "all"].contains(v.lowercased()) else {
                throw ConfigurationError(variable: "OSC_CLUSTER_WRITE_QUORUM", problem: "'\(v)' is not 1, majority or all")
            }
            c.clusterWriteQuorum = v.lowercased()
        }
        if let v = try boolean("OSC_CLUSTER_ALLOW_INSECURE") { c.clusterAllowInsecure = v }
        if let path = value("OSC_CLUSTER_SECRET_FILE") {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ConfigurationError(variable: "OSC_CLUSTER_SECRET_FILE", problem: "cannot read \(path)")
            }
            c.clusterSecret = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let v = values["OSC_CLUSTER_SECRET"], !v.isEmpty { c.clusterSecret = v }
        if let secret = c.clusterSecret {
            guard secret.unicodeScalars.count >= 32 else {
                throw ConfigurationError(variable: "OSC_CLUSTER_SECRET", problem: "must be at least 32 characters (e.g. `openssl rand -hex 32`)")
            }
            guard secret != c.apiKey else {
                throw ConfigurationError(
                    variable: "OSC_CLUSTER_SECRET",
                    problem: "must differ from OSC_API_KEY: clients hold the API key, only nodes may hold the secret"
                )
            }
        }
        if let v = try boolean("OSC_CLUSTER_ACCEPT_API_KEY_PEERS") { c.clusterAcceptAPIKeyPeers = v }
        if let v = try seconds("OSC_CLUSTER_MAX_CLOCK_SKEW") {
            guard v <= 3600 else { throw ConfigurationError(variable: "OSC_CLUSTER_MAX_CLOCK_SKEW", problem: "\(v) is more than an hour") }
            c.clusterMaxClockSkewSeconds = v
        }
        if let v = try seconds("OSC_REQUEST_TIMEOUT") { c.requestTimeoutSeconds = min(v, 3600) }
        if let v = try integer("OSC_MAX_CONNECTIONS", 1...1_000_000) { c.maxConnections = v }
        if let v = try integer("OSC_MAX_CONNECTIONS_PER_CLIENT", 1...1_000_000) { c.maxConnectionsPerClient = v }
        if let v = try integer("OSC_MAX_HEADER_BYTES", (16 * 1024)...(16 * 1024 * 1024)) { c.maxHeaderBytes = v }
        if let v = try integer("OSC_SSE_MAX_SUBSCRIBERS", 0...1_000_000) { c.sseMaxSubscribers = v }
        if let v = try integer("OSC_SSE_QUEUE_SIZE", 1...100_000) { c.sseQueueSize = v }
        if let v = try seconds("OSC_SSE_KEEPALIVE_SECONDS") {
            // At most a minute: clients (SecureConf's among them) treat 90 s of silence as a dead stream.
            guard v >= 0.1, v <= 60 else { throw ConfigurationError(variable: "OSC_SSE_KEEPALIVE_SECONDS", problem: "\(v) is outside 0.1…60") }
            c.sseKeepAliveSeconds = v
        }
        if let v = value("OSC_AUTH_MODE") {
            guard let mode = AuthMode(rawValue: v.lowercased()) else {
                throw ConfigurationError(variable: "OSC_AUTH_MODE", problem: "'\(v.prefix(40))' is not apikey or tokens")
            }
            c.authMode = mode
        }
        if let v = try integer("OSC_TOKEN_TTL", 60...2_592_000) { c.tokenTTLSeconds = v }
        if let v = try integer("OSC_UI_IDLE_MINUTES", 1...1440) { c.uiIdleMinutes = v }
        if let raw = values["CORS_ORIGINS"] {
            guard let origins = CORSOrigins.parse(raw) else {
                throw ConfigurationError(
                    variable: "CORS_ORIGINS",
                    problem: "'\(raw)' must be * or comma-separated origins such as https://gui.example.com:8443"
                )
            }
            c.corsOrigins = origins
        }

        if c.apiKeyRequired {
            guard let key = c.apiKey else {
                throw ConfigurationError(variable: "OSC_API_KEY", problem: "must be set when OSC_API_KEY_REQUIRED=true")
            }
            guard key != "your-super-secret-api-key-here" else {
                throw ConfigurationError(variable: "OSC_API_KEY", problem: "is still OpenSecureConf's example value; set a secret of your own")
            }
        }
        if c.database != nil {
            if c.clusterEnabled {
                throw ConfigurationError(
                    variable: "OSC_CLUSTER_ENABLED",
                    problem: "nodes on PostgreSQL share one database and do not replicate: unset it, and put the nodes behind a load balancer"
                )
            }
            if c.tombstoneHorizonSeconds != nil {
                throw ConfigurationError(variable: "OSC_TOMBSTONE_HORIZON", problem: "is not supported on PostgreSQL yet (SQLite only)")
            }
        }
        if c.clusterEnabled {
            // A node that misses a couple of rounds must not count as away longer than the horizon.
            if let h = c.tombstoneHorizonSeconds, h < 3 * c.clusterSyncIntervalSeconds {
                throw ConfigurationError(
                    variable: "OSC_TOMBSTONE_HORIZON",
                    problem: "\(h) s is less than three anti-entropy rounds (OSC_CLUSTER_SYNC_INTERVAL=\(c.clusterSyncIntervalSeconds) s)"
                )
            }
            if !c.apiKeyRequired || c.apiKey == nil, !c.clusterAllowInsecure {
                throw ConfigurationError(
                    variable: "OSC_API_KEY_REQUIRED",
                    problem:
                        "a cluster needs OSC_API_KEY_REQUIRED=true and an OSC_API_KEY shared by every node (nodes authenticate each other with it); set OSC_CLUSTER_ALLOW_INSECURE=true only for throwaway tests"
                )
            }
            if c.clusterNodeID == nil, ["0.0.0.0", "::", "[::]"].contains(c.host) {
                throw ConfigurationError(
                    variable: "OSC_CLUSTER_NODE_ID",
                    problem: "must be set to this node's reachable host:port when OSC_HOST is \(c.host)"
                )
            }
        }
        return c
    }

    /// host:port entries separated by commas, whitespace or newlines (`#` starts a comment in
    /// a file), each checked, without duplicates.
    static func nodeList(_ text: String, variable: String) throws(ConfigurationError) -> [String] {
        var nodes: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            for item in content.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" || $0 == "\r" }) {
                let n = String(item)
                guard isHostPort(n) else { throw ConfigurationError(variable: variable, problem: "'\(n.prefix(100))' is not host:port") }
                if !nodes.contains(n) { nodes.append(n) }
            }
        }
        guard nodes.count <= 1000 else { throw ConfigurationError(variable: variable, problem: "more than 1000 nodes") }
        return nodes
    }

    static func isHostPort(_ s: String) -> Bool {
        guard let colon = s.lastIndex(of: ":") else { return false }
        let host = s[..<colon]
        guard let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port), !host.isEmpty else { return false }
        return host.allSatisfy { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" || $0 == "[" || $0 == "]" || $0 == ":" }
    }

    /// Reads a `.env` file: `NAME=value` lines, `#` comments, optional `export ` and quotes.
    public static func readDotEnv(at path: String) throws(ConfigurationError) -> [String: String] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigurationError(variable: path, problem: "cannot be read as UTF-8 text")
        }
        var out: [String: String] = [:]
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigurationError(variable: "\(path):\(number + 1)", problem: "expected NAME=value")
            }
            let name = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            } else if let hash = value.range(of: " #") {
                value = value[..<hash.lowerBound].trimmingCharacters(in: .whitespaces)
            }
            out[name] = value
        }
        return out
    }

    /// The merged view: `.env` below the process environment, `overrides` (flags) on top.
    public static func load(
        environment: [String: String],
        dotEnvPath: String?,
        overrides: [String: String]
    ) throws(ConfigurationError) -> NodeConfiguration {
        var merged = try dotEnvPath.map { path throws(ConfigurationError) in try readDotEnv(at: path) } ?? [:]
        for (k, v) in environment { merged[k] = v }
        for (k, v) in overrides { merged[k] = v }
        return try parse(merged)
    }
}

extension NodeConfiguration {
    /// The cluster's settings, or nil on a single node.
    public var clusterSettings: ClusterSettings? {
        guard clusterEnabled else { return nil }
        let quorum: ClusterSettings.WriteQuorum =
            switch clusterWriteQuorum {
            case "majority": .majority
            case "all": .all
            default: .one
            }
        var settings = ClusterSettings(
            nodeID: nodeID,
            peers: clusterNodes,
            mode: clusterMode == .federated ? .federated : .replica,
            apiKey: apiKey ?? "",
            syncInterval: .milliseconds(Int64(clusterSyncIntervalSeconds * 1000)),
            healthInterval: .milliseconds(Int64(clusterHealthIntervalSeconds * 1000)),
            peerTimeout: .milliseconds(Int64(clusterPeerTimeoutSeconds * 1000)),
            writeQuorum: quorum,
            saltWait: .milliseconds(Int64(clusterSaltWaitSeconds * 1000)),
            scheme: tlsEnabled ? "https" : "http",
            caFile: clusterTLSCAFile
        )
        settings.credential = clusterSecret.map { PeerCredential(secret: Array($0.utf8)) }
        settings.acceptAPIKeyPeers = clusterAcceptAPIKeyPeers
        settings.maxClockSkew = .milliseconds(Int64(clusterMaxClockSkewSeconds * 1000))
        settings.maxCiphertextBytes = maxCiphertextBytes
        settings.tombstoneHorizon = tombstoneHorizonSeconds.map { .milliseconds(Int64($0 * 1000)) }
        return settings
    }
}

/// Python-style level names mapped onto swift-log's.
enum LogLevelName {
    static func parse(_ s: String) -> String? {
        switch s.uppercased() {
        case "TRACE": "trace"
        case "DEBUG": "debug"
        case "INFO": "info"
        case "NOTICE": "notice"
        case "WARNING", "WARN": "warning"
        case "ERROR": "error"
        case "CRITICAL", "FATAL": "critical"
        default: nil
        }
    }
}

/// Maps the configured level name to swift-log's level raw value.
public enum LogLevelNames {
    public static func swiftLogName(_ name: String) -> String { LogLevelName.parse(name) ?? "info" }
}
