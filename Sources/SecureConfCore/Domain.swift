import Logging
import SecureConfJSON
import SecureConfStore

/// Who is calling: the credential they present and where they call from, and the note the
/// audit trail takes of the request.
public struct Caller: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The `X-User-Key` value, already checked for presence, encoding and length by the
    /// HTTP layer; nil when the request carries none (a versions listing may omit it).
    public var userKey: String?
    /// The client's address, for the failed-attempt limiter.
    public var client: String
    public var audit: AuditNote
    /// Whether the caller holds the API key (shown actors in history without a user key).
    public var holdsAPIKey: Bool
    /// The request's logger (its lines carry the request id).
    public var logger: Logger
    /// Who the request acts as in `tokens` mode (its verified bearer token); nil in `apikey`
    /// mode, where whoever passed the API-key check may do everything.
    public var principal: Principal?

    public init(userKey: String?, client: String, audit: AuditNote, holdsAPIKey: Bool = false, logger: Logger, principal: Principal? = nil) {
        self.userKey = userKey
        self.client = client
        self.audit = audit
        self.holdsAPIKey = holdsAPIKey
        self.logger = logger
        self.principal = principal
    }

    /// The tenant whose entries the caller addresses: its principal's (`default` without one).
    public var tenant: String { principal?.tenant ?? Revision.defaultTenant }

    /// Whether the caller's policy allows `capability` on this entry (always, without one).
    public func may(_ capability: Capability, environment: String, key: String) -> Bool {
        principal?.policy.allows(capability, environment: environment, key: key) ?? true
    }

    /// Never the user key: a caller printed, dumped or interpolated into a log line names only
    /// whether it holds one.
    public var description: String {
        "Caller(client: \(client), user key: \(userKey == nil ? "none" : "given"), API key: \(holdsAPIKey), as: \(principal?.subject ?? "-"))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["client": client, "holdsAPIKey": holdsAPIKey], displayStyle: .struct) }
}

/// One configuration entry: its tenant (always `default` until access control names
/// others), environment and key; the store's `EntryName`.
public typealias EntryAddress = EntryName

/// Every operation of the service: the name is the `operation` label of
/// `osc_config_operations_total`.
public enum ConfigOperation: String, Sendable, CaseIterable {
    case create, read, update, delete, list, versions, stats, distribution, backup
    case importBackup = "import"
    case readVersion = "read_version"
    case readAt = "read_at"
    case rollback, diff, restore, subscribe, rekey

    public var writes: Bool {
        switch self {
        case .create, .update, .delete, .rollback, .restore, .importBackup, .rekey: true
        default: false
        }
    }
}

/// An entry with its value as JSON text, in the record shape clients receive.
public struct ConfigRecord: Sendable {
    public var entry: ConfigEntry
    public var valueJSON: [UInt8]
    /// The version number, for history reads and rollbacks.
    public var version: Int?
}

/// What a listing asks for.
public struct ListQuery: Sendable {
    public var tenant: String = Revision.defaultTenant
    public var environment: String?
    public var category: String?
    /// 1–10000; nil for everything.
    public var limit: Int?
    public var offset: Int
    /// The last entry id seen (single node and replica; not across federated nodes).
    public var after: Int64?

    public init(environment: String? = nil, category: String? = nil, limit: Int? = nil, offset: Int = 0, after: Int64? = nil) {
        self.environment = environment
        self.category = category
        self.limit = limit
        self.offset = offset
        self.after = after
    }
}

/// A page of entries the caller's key opens, in creation order.
public struct ListPage: Sendable {
    public var records: [ConfigRecord]
    /// Entries on the page written under other user keys (left out).
    public var skipped: Int
    /// The `after` of the next page, when the page is full.
    public var nextAfter: Int64?
}

/// What `/stats` reports: the entries the caller's key opens, counted by category
/// (`uncategorized` for none, as OpenSecureConf names it) and by environment.
public struct EntryStatistics: Sendable {
    public var totalKeys = 0
    public var keysByCategory: [String: Int] = [:]
    public var keysByEnvironment: [String: Int] = [:]
}

/// What `/cluster/distribution` reports: per node, how many live entries the caller's key
/// opens there (a node that did not answer: unhealthy, 0).
public struct Distribution: Sendable {
    public struct Node: Sendable {
        public var nodeID: String
        public var isLocal: Bool
        public var isHealthy: Bool
        public var keysCount: Int
    }

    public var mode: String
    public var nodes: [Node]
}

/// A key's versions, oldest first, and whether their actors may be shown to the caller.
public struct VersionListing: Sendable {
    public var address: EntryAddress
    public var history: KeyHistory
    public var showsActors: Bool
}

/// What a restore did: keys by outcome. Keys the caller's key cannot open are only counted.
public struct RestoreReport: Sendable {
    public var environment: String
    public var at: Int64
    public var restored: [String] = []
    public var recreated: [String] = []
    public var deleted: [String] = []
    public var unchanged = 0
    public var undecryptable = 0
    public var pruned: [String] = []
}

/// What a rekey did: the keys whose values now open with the new user key; values under
/// other user keys are only counted.
public struct RekeyReport: Sendable {
    public var environment: String
    public var rekeyed: [String] = []
    public var otherKeys = 0
}

/// How an operation ended, as counted.
public enum OperationOutcome: String, Sendable {
    case success
    /// What it addressed does not exist (or no longer has that version).
    case notFound = "not_found"
    case error
}

/// Receives the service's counts (`ServerMetrics` in the server).
public protocol OperationObserver: Sendable {
    func recordOperation(_ operation: ConfigOperation, outcome: OperationOutcome)
    func recordEncryption(_ operation: String, count: Int)
}

/// Decides whether a caller may perform an operation on what it addresses. Runs before any
/// key work; throws `ServiceError(.forbidden, …)` to refuse.
public protocol Authorizer: Sendable {
    func authorize(_ caller: Caller, _ operation: ConfigOperation, tenant: String, environment: String?, key: String?) throws(ServiceError)
}

/// The caller's policy (`tokens` mode): the operation's capability on what it addresses, or,
/// for one that addresses no single environment or key (a listing), somewhere; its results
/// are then filtered entry by entry. Without a principal (`apikey` mode) everything is allowed.
public struct PolicyAuthorizer: Authorizer {
    public init() {}
    public func authorize(_ caller: Caller, _ operation: ConfigOperation, tenant: String, environment: String?, key: String?) throws(ServiceError) {
        guard let principal = caller.principal else { return }
        let capability = Capability.needed(for: operation)
        if principal.policy.allows(capability, environment: environment, key: key) { return }
        var scope: [String] = []
        if let environment { scope.append("environment '\(environment.prefix(100))'") }
        if let key { scope.append("key '\(key.prefix(100))'") }
        throw ServiceError(
            .forbidden,
            "\(principal.subject) lacks the '\(capability.rawValue)' capability\(scope.isEmpty ? "" : " on " + scope.joined(separator: ", "))"
        )
    }
}
