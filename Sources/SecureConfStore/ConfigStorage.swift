/// One entry's identity everywhere above the store: tenant, environment, key (the tenant is
/// always `default` until access control names others, as on the wire).
public struct EntryName: Sendable, Hashable, CustomStringConvertible {
    /// The environment of an entry that names none (OpenSecureConf 2.x's rows, bodies without one).
    public static let defaultEnvironment = "default"

    public var tenant: String
    public var environment: String
    public var key: String

    public init(tenant: String = Revision.defaultTenant, environment: String, key: String) {
        self.tenant = tenant
        self.environment = environment
        self.key = key
    }

    public var description: String { "\(tenant)/\(environment)/\(key)" }
}

/// Current entries and the writes that make their revisions. A write's `audit` record
/// commits with its data or not at all; a write that replaces a value takes `authenticates`,
/// the caller's proof that its key opens the value being replaced (`StoreError.wrongKey`
/// otherwise), checked inside the write's transaction.
public protocol EntryStorage: Sendable {
    func entry(_ name: EntryName) async throws -> ConfigEntry?
    func list(
        tenant: String,
        environment: String?,
        category: String?,
        limit: Int?,
        offset: Int,
        afterID: Int64?,
        includeDeleted: Bool
    )
        async throws -> [ConfigEntry]
    func create(_ name: EntryName, category: String?, ciphertext: String, actor: String?, audit: AuditRecordDraft?) async throws -> ConfigEntry
    func update(
        _ name: EntryName,
        category: String?,
        ciphertext: String,
        actor: String?,
        audit: AuditRecordDraft?,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> ConfigEntry
    func delete(_ name: EntryName, actor: String?, audit: AuditRecordDraft?, authenticates: @escaping @Sendable (String) -> Bool) async throws
    /// Live entries, for readiness and metrics.
    var liveEntryCount: Int { get }
    /// Why writes are refused now (storage failing), or nil.
    func writeRefusal() async -> String?
}

extension EntryStorage {
    /// Every current entry in scope, unpaged.
    public func all(tenant: String, environment: String? = nil, category: String? = nil, includeDeleted: Bool = false) async throws -> [ConfigEntry] {
        try await list(
            tenant: tenant,
            environment: environment,
            category: category,
            limit: nil,
            offset: 0,
            afterID: nil,
            includeDeleted: includeDeleted
        )
    }
}

/// Every revision of an entry, pruning, past states, and the writes that bring old values back.
public protocol HistoryStorage: Sendable {
    func history(_ name: EntryName) async throws -> KeyHistory?
    func version(_ version: Int, of name: EntryName) async throws -> (NumberedRevision, entryID: Int64)
    func pastState(of name: EntryName, atOrBeforeMicros micros: Int64) async throws -> (PastState, entryID: Int64?)
    func pastStates(tenant: String, environment: String, atOrBeforeMicros micros: Int64) async throws -> [(current: ConfigEntry, past: PastState)]
    func rollback(
        _ name: EntryName,
        category: String?,
        ciphertext: String,
        actor: String?,
        audit: AuditRecordDraft?,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> (ConfigEntry, version: Int)
    func restore(tenant: String, environment: String, changes: [PlannedRestore], actor: String?, audit: AuditRecordDraft?) async throws
}

/// The hash-chained audit trail.
public protocol AuditStorage: Sendable {
    func appendAudit(_ draft: AuditRecordDraft) async throws -> AuditRecord
    func auditRecords(_ filter: AuditFilter, afterID: Int64?, limit: Int) async throws -> [AuditRecord]
    func auditRecordCount() async throws -> Int64
    func verifyAudit() async throws -> AuditVerification
}

/// What replication and anti-entropy read and write: this node's own revisions in order,
/// per-peer cursors, digests and buckets, revisions by identity, and batches from peers.
public protocol ReplicationStorage: Sendable {
    var clock: HybridLogicalClock { get }
    func ownRevisions(after seq: Int64, limit: Int, maxBytes: Int) async throws -> [(seq: Int64, revision: Revision)]
    /// This node's own revisions pruned here, after `seq` and at most `through`, oldest first.
    func ownPruned(after seq: Int64, through: Int64, limit: Int) async throws -> [(seq: Int64, marker: PrunedMarker)]
    /// The sequence number of the newest revision this node originated (what a quorum waits for).
    func lastOwnSeq() async throws -> Int64
    func oldestOwnRevisionTime(after seq: Int64) async throws -> Int64?
    func outboxDepth(after seq: Int64) async throws -> Int
    func peerCursor(_ peer: String) async throws -> Int64
    func setPeerCursor(_ peer: String, to seq: Int64) async throws
    /// Drops a retired peer's cursor.
    func forgetPeer(_ peer: String) async throws
    func digest() async throws -> StoreDigest
    func revisionIDs(bucket: Int) async throws -> [RevisionID]
    func revisions(ids: [RevisionID]) async throws -> [Revision]
    func newestRevision(_ name: EntryName) async throws -> Revision?
    func apply(batch revisions: [Revision], pruned: [PrunedMarker]) async throws -> ApplyOutcome
    func setAsideCount() async throws -> Int
    /// Sets aside this node's own revisions stamped after `millis` (its clock ran ahead),
    /// except those `held` says a peer holds (by local sequence number).
    func setAsideOwnRevisions(stampedAfterMillis millis: Int64, unless held: @escaping @Sendable (Int64) -> Bool) async throws -> Int
}

/// Small named values kept with the data (the salt's fingerprint, the key-derivation parameters).
public protocol MetadataStorage: Sendable {
    func metadata(_ name: String) throws -> String?
    func setMetadata(_ name: String, _ value: String) throws
    /// Whether any revision was ever written.
    func hasData() throws -> Bool
    /// Records `value` under `name` unless a value is recorded already; returns what is
    /// recorded. Nodes that share one database agree through it on what only one may choose
    /// (the salt's fingerprint, the actor key): the first to record wins.
    func claimMetadata(_ name: String, _ value: String) throws -> String
}

/// Everything the domain layer and HTTP need from storage. `ConfigStore` (SQLite through
/// GRDB) and `PostgresStore` (SecureConfPostgres) implement it; another engine implements
/// these protocols without touching the domain layer or HTTP.
public typealias ConfigStorage = EntryStorage & HistoryStorage & AuditStorage & MetadataStorage & ChangeFeedStorage & StorageLifecycle

/// What a replica cluster's node needs on top: its own revisions in order, digests, batches
/// from peers, and collected tombstones. Only `ConfigStore` has it: nodes on one PostgreSQL
/// database share their data and do not replicate.
public typealias ReplicatedStorage = ConfigStorage & ReplicationStorage & CollectionStorage

/// Opening and closing, and what the engine is called in `/ready` and the logs.
public protocol StorageLifecycle: Sendable {
    /// "sqlite" or "postgresql".
    var engine: String { get }
    /// Finishes pending writes and closes.
    func close() async
}

extension ConfigStore: EntryStorage, HistoryStorage, AuditStorage, ReplicationStorage, MetadataStorage, StorageLifecycle {
    public var engine: String { "sqlite" }

    private func local(_ tenant: String) throws { try TenantNames.checkLocal(tenant) }
    private func stored(_ name: EntryName) throws -> String { try TenantNames.stored(name) }

    public func entry(_ name: EntryName) async throws -> ConfigEntry? {
        return try await entry(environment: try stored(name), key: name.key)
    }

    public func list(
        tenant: String,
        environment: String?,
        category: String?,
        limit: Int?,
        offset: Int,
        afterID: Int64?,
        includeDeleted: Bool
    ) async throws -> [ConfigEntry] {
        try local(tenant)
        return try await list(
            storedIn: tenant,
            environment: environment.map { TenantNames.stored(tenant: tenant, environment: $0) },
            category: category,
            limit: limit,
            offset: offset,
            afterID: afterID,
            includeDeleted: includeDeleted
        )
    }

    public func create(_ name: EntryName, category: String?, ciphertext: String, actor: String?, audit: AuditRecordDraft?) async throws -> ConfigEntry
    {
        return try await create(environment: try stored(name), key: name.key, category: category, ciphertext: ciphertext, actor: actor, audit: audit)
    }

    public func update(
        _ name: EntryName,
        category: String?,
        ciphertext: String,
        actor: String?,
        audit: AuditRecordDraft?,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> ConfigEntry {
        return try await update(
            environment: try stored(name),
            key: name.key,
            category: category,
            ciphertext: ciphertext,
            actor: actor,
            audit: audit,
            authenticates: authenticates
        )
    }

    public func delete(_ name: EntryName, actor: String?, audit: AuditRecordDraft?, authenticates: @escaping @Sendable (String) -> Bool) async throws
    {
        try await delete(environment: try stored(name), key: name.key, actor: actor, audit: audit, authenticates: authenticates)
    }

    public func history(_ name: EntryName) async throws -> KeyHistory? {
        return try await history(environment: try stored(name), key: name.key)
    }

    public func version(_ version: Int, of name: EntryName) async throws -> (NumberedRevision, entryID: Int64) {
        return try await self.version(version, environment: try stored(name), key: name.key)
    }

    public func pastState(of name: EntryName, atOrBeforeMicros micros: Int64) async throws -> (PastState, entryID: Int64?) {
        return try await pastState(environment: try stored(name), key: name.key, atOrBeforeMicros: micros)
    }

    public func pastStates(
        tenant: String,
        environment: String,
        atOrBeforeMicros micros: Int64
    ) async throws -> [(current: ConfigEntry, past: PastState)] {
        try local(tenant)
        return try await pastStates(environment: TenantNames.stored(tenant: tenant, environment: environment), atOrBeforeMicros: micros)
    }

    public func rollback(
        _ name: EntryName,
        category: String?,
        ciphertext: String,
        actor: String?,
        audit: AuditRecordDraft?,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> (ConfigEntry, version: Int) {
        return try await rollback(
            environment: try stored(name),
            key: name.key,
            category: category,
            ciphertext: ciphertext,
            actor: actor,
            audit: audit,
            authenticates: authenticates
        )
    }

    public func restore(tenant: String, environment: String, changes: [PlannedRestore], actor: String?, audit: AuditRecordDraft?) async throws {
        try local(tenant)
        try await restore(environment: TenantNames.stored(tenant: tenant, environment: environment), changes: changes, actor: actor, audit: audit)
    }

    public func newestRevision(_ name: EntryName) async throws -> Revision? {
        return try await newestRevision(environment: try stored(name), key: name.key)
    }
}
