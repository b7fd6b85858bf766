import Foundation
import Logging
import NIOSSL
import PostgresNIO
import SecureConfStore
import Synchronization

/// The storage protocol on PostgreSQL: any number of nodes share one database and hold no
/// state of their own. PostgreSQL serialises the writes: every write transaction first
/// locks the `last_seq` counter row, then reads the current entry, so two nodes' writes to
/// one key never race (a second create sees the first and gets "already exists") and
/// sequence numbers are committed in order (the change feed never skips one). The database
/// only ever holds ciphertext, as SQLite does.
public final class PostgresStore: ConfigStorage, Sendable {
    public struct Configuration: Sendable {
        public var settings: PostgresSettings
        public var nodeID: String
        public var maxVersions: Int?
        public var maxClockAheadMillis: Int64 = 5000
        /// How long one operation may wait for the database before 503.
        public var operationTimeout: Duration = .seconds(10)
        /// Where pool use, latency and errors are reported.
        public var observer: (any PostgresObserver)?

        public init(settings: PostgresSettings, nodeID: String) {
            self.settings = settings
            self.nodeID = nodeID
        }
    }

    public let nodeID: String
    public let clock: HybridLogicalClock
    public let maxVersions: Int?
    public let settings: PostgresSettings
    public let commits = WakeSignal()
    public var engine: String { "postgresql" }
    let database: PostgresDatabase
    let groupCommit: PostgresGroupCommit
    let logger: Logger
    private let liveEntries: Mutex<Int>
    private let listener: Mutex<Task<Void, Never>?> = Mutex(nil)

    /// Connects, runs the migrations the database lacks (once across nodes starting together),
    /// and reads what the node needs to start: its clock's floor and the live-entry count.
    public static func open(_ configuration: Configuration, logger: Logger) async throws -> PostgresStore {
        let database = PostgresDatabase(
            settings: configuration.settings,
            timeout: configuration.operationTimeout,
            logger: logger,
            observer: configuration.observer
        )
        do {
            try await database.start()
            // Waiting for another node's migration lock is part of it: a long deadline.
            _ = try await database.run(timeout: .seconds(600)) { client in try await PostgresSchema.migrate(client, logger: logger) }
            let (live, maxHLC) = try await database.run { client in
                var live = 0
                var maxHLC: Int64 = 0
                for try await (l, m) in try await client.query(
                    "SELECT (SELECT value FROM counters WHERE name = 'live_entries'), (SELECT COALESCE(MAX(hlc), 0) FROM revisions)",
                    logger: logger
                ).decode((Int64, Int64).self) {
                    (live, maxHLC) = (Int(l), m)
                }
                return (live, maxHLC)
            }
            let store = PostgresStore(configuration, database: database, live: live, maxHLC: maxHLC, logger: logger)
            store.startListening()
            return store
        } catch {
            await database.shutdown()
            throw error
        }
    }

    private init(_ configuration: Configuration, database: PostgresDatabase, live: Int, maxHLC: Int64, logger: Logger) {
        nodeID = configuration.nodeID
        maxVersions = configuration.maxVersions.map { max(1, $0) }
        settings = configuration.settings
        self.database = database
        groupCommit = PostgresGroupCommit(database: database, keep: configuration.maxVersions.map { max(1, $0) }, notifyChannel: Self.channel)
        self.logger = logger
        liveEntries = Mutex(live)
        clock = HybridLogicalClock(startingAfter: maxHLC, maxAheadMillis: configuration.maxClockAheadMillis)
    }

    public func close() async {
        listener.withLock { $0?.cancel() }
        await database.shutdown()
    }

    public var liveEntryCount: Int { liveEntries.withLock { $0 } }

    /// The host operations go to now.
    public var activeHost: PostgresSettings.Host { database.activeHost }

    /// nil while the database takes writes; otherwise why not (unreachable, or a read-only
    /// standby), for `/ready`.
    public func writeRefusal() async -> String? {
        do {
            let readOnly = try await database.run { client in
                var readOnly = true
                for try await r in try await client.query("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'").decode(
                    Bool.self
                ) {
                    readOnly = r
                }
                return readOnly
            }
            return readOnly ? "PostgreSQL is read-only here (a standby, not promoted): writes wait for a writable primary" : nil
        } catch {
            return "\(error)"
        }
    }

    // MARK: Change notifications

    /// The channel every commit notifies: the change feeds of all nodes on the database wake on it.
    static let channel = "secureconf_commits"

    /// LISTENs for other nodes' commits on a connection of its own, reconnecting with a
    /// growing pause when the database goes away. The change feed's one-second wait is the
    /// fallback while it is down.
    private func startListening() {
        let task = Task { [weak self] in
            var pause = Duration.milliseconds(100)
            while !Task.isCancelled {
                guard let self else { return }
                let heard = Atomic(false)
                do {
                    try await self.database.listen(on: Self.channel) {
                        heard.store(true, ordering: .relaxed)
                        self.commits.signal()
                        await self.refreshLiveCount()
                    }
                } catch {
                    if Task.isCancelled { return }
                    self.logger.debug("PostgreSQL notifications interrupted; reconnecting", metadata: ["reason": "\(error)"])
                }
                // A connection that delivered notifications was healthy: start over with a short pause.
                if heard.load(ordering: .relaxed) { pause = .milliseconds(100) }
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(5))
            }
        }
        listener.withLock { $0 = task }
    }

    private func refreshLiveCount() async {
        guard
            let value = try? await database.run({ client in
                var v: Int64 = 0
                for try await n in try await client.query("SELECT value FROM counters WHERE name = 'live_entries'").decode(Int64.self) { v = n }
                return v
            })
        else { return }
        liveEntries.withLock { $0 = Int(value) }
    }

    // MARK: Metadata

    /// Metadata is read and written at start-up (the salt's fingerprint, the KDF parameters,
    /// the actor key), where the protocol is synchronous: these block the calling thread
    /// until the database answers, within the operation timeout.
    public func metadata(_ name: String) throws -> String? {
        try database.blocking { client in
            var value: String?
            for try await v in try await client.query("SELECT value FROM meta WHERE name = \(name)").decode(String.self) { value = v }
            return value
        }
    }

    public func setMetadata(_ name: String, _ value: String) throws {
        try database.blocking { client in
            try await client.execute(
                "INSERT INTO meta(name, value) VALUES (\(name), \(value)) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
            )
        }
    }

    public func claimMetadata(_ name: String, _ value: String) throws -> String {
        try database.blocking { client in
            try await client.execute("INSERT INTO meta(name, value) VALUES (\(name), \(value)) ON CONFLICT (name) DO NOTHING")
            var stored = value
            for try await v in try await client.query("SELECT value FROM meta WHERE name = \(name)").decode(String.self) { stored = v }
            return stored
        }
    }

    public func hasData() throws -> Bool {
        try database.blocking { client in
            var any = false
            for try await v in try await client.query("SELECT EXISTS(SELECT 1 FROM revisions)").decode(Bool.self) { any = v }
            return any
        }
    }

    // MARK: Entries

    static let entryColumns = "id, environment, key, category, ciphertext, hlc, origin, deleted, created_at, updated_at"
    static let revisionColumns =
        "environment, key, category, ciphertext, hlc, origin, deleted, created_at, updated_at, actor, purges_through_hlc, purges_through_origin"

    public func entry(_ name: EntryName) async throws -> ConfigEntry? {
        let environment = try TenantNames.stored(name)
        return try await database.run { client in
            try await Self.entries(
                client.query(
                    "SELECT \(unescaped: Self.entryColumns) FROM entries WHERE environment = \(environment) AND key = \(name.key) AND NOT deleted"
                )
            ).first
        }
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
        try TenantNames.checkLocal(tenant)
        var sql = "SELECT \(Self.entryColumns) FROM entries WHERE \(includeDeleted ? "TRUE" : "NOT deleted")"
        var binds = PostgresBindings()
        func bind(_ value: some PostgresDynamicTypeEncodable) -> String { binds.placeholder(value) }
        if let environment {
            sql += " AND environment = \(bind(TenantNames.stored(tenant: tenant, environment: environment)))"
        } else if tenant == Revision.defaultTenant {
            // Users and tokens are no configuration; other tenants' names start with the separator.
            sql += " AND environment <> \(bind(EntryNames.identityEnvironment)) AND substr(environment, 1, 1) <> chr(2)"
        } else {
            sql += " AND environment > \(bind(TenantNames.stored(tenant: tenant, environment: ""))) AND environment < \(bind("\u{2}\(tenant)\u{3}"))"
        }
        if let category { sql += " AND category = \(bind(category))" }
        if let afterID { sql += " AND id > \(bind(afterID))" }
        sql += " ORDER BY id"
        if let limit { sql += " LIMIT \(bind(max(0, limit)))" }
        sql += " OFFSET \(bind(max(0, offset)))"
        let query = PostgresQuery(unsafeSQL: sql, binds: binds)
        return try await database.run { client in try await Self.entries(client.query(query)) }
    }

    public func create(_ name: EntryName, category: String?, ciphertext: String, actor: String?, audit: AuditRecordDraft?) async throws -> ConfigEntry
    {
        let environment = try TenantNames.stored(name)
        let plan = self.plan
        return try await commit(audit: audit) { tx in
            let current = try await tx.current(environment, name.key)
            let (revision, delta) = try plan.create(
                environment: environment,
                key: name.key,
                current: current,
                category: category,
                ciphertext: ciphertext,
                actor: actor
            )
            return (try await tx.record(revision, replacing: current), delta)
        }
    }

    public func update(
        _ name: EntryName,
        category: String?,
        ciphertext: String,
        actor: String?,
        audit: AuditRecordDraft?,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> ConfigEntry {
        let environment = try TenantNames.stored(name)
        let plan = self.plan
        return try await commit(audit: audit) { tx in
            let current = try await tx.current(environment, name.key)
            let (revision, delta) = try plan.update(
                environment: environment,
                key: name.key,
                current: current,
                category: category,
                ciphertext: ciphertext,
                actor: actor,
                authenticates: authenticates
            )
            return (try await tx.record(revision, replacing: current), delta)
        }
    }

    public func delete(_ name: EntryName, actor: String?, audit: AuditRecordDraft?, authenticates: @escaping @Sendable (String) -> Bool) async throws
    {
        let environment = try TenantNames.stored(name)
        let plan = self.plan
        _ = try await commit(audit: audit) { tx in
            let current = try await tx.current(environment, name.key)
            let (revision, delta) = try plan.delete(
                environment: environment,
                key: name.key,
                current: current,
                actor: actor,
                authenticates: authenticates
            )
            return (try await tx.record(revision, replacing: current), delta)
        }
    }

    var plan: WritePlan { WritePlan(origin: nodeID, clock: clock) }

    // MARK: History

    public func history(_ name: EntryName) async throws -> KeyHistory? {
        let environment = try TenantNames.stored(name)
        return try await database.snapshot { tx in
            guard let entry = try await tx.current(environment, name.key) else { return nil }
            let pruned = try await tx.prunedCount(environment, name.key)
            let revisions = try await Self.revisions(
                tx.query(
                    "SELECT \(unescaped: Self.revisionColumns) FROM revisions WHERE environment = \(environment) AND key = \(name.key) ORDER BY hlc, origin"
                )
            )
            let numbered = revisions.enumerated().map { NumberedRevision(version: pruned + $0.offset + 1, revision: $0.element) }
            return KeyHistory(prunedCount: pruned, versions: numbered, entryID: entry.id)
        }
    }

    public func version(_ version: Int, of name: EntryName) async throws -> (NumberedRevision, entryID: Int64) {
        let environment = try TenantNames.stored(name)
        return try await database.snapshot { tx in
            guard let entry = try await tx.current(environment, name.key) else {
                throw StoreError.notFound(environment: environment, key: name.key)
            }
            let pruned = try await tx.prunedCount(environment, name.key)
            guard version >= 1 else { throw StoreError.versionNotFound(environment: environment, key: name.key, version: version) }
            if version <= pruned { throw StoreError.versionPruned(environment: environment, key: name.key, version: version) }
            let offset = version - pruned - 1
            guard
                let revision = try await Self.revisions(
                    tx.query(
                        """
                        SELECT \(unescaped: Self.revisionColumns) FROM revisions WHERE environment = \(environment) AND key = \(name.key)
                        ORDER BY hlc, origin LIMIT 1 OFFSET \(offset)
                        """
                    )
                ).first
            else {
                throw StoreError.versionNotFound(environment: environment, key: name.key, version: version)
            }
            return (NumberedRevision(version: version, revision: revision), entry.id)
        }
    }

    public func pastState(of name: EntryName, atOrBeforeMicros micros: Int64) async throws -> (PastState, entryID: Int64?) {
        let environment = try TenantNames.stored(name)
        return try await database.snapshot { tx in
            let entry = try await tx.current(environment, name.key)
            return (try await tx.pastState(environment, name.key, atOrBeforeMicros: micros), entry?.id)
        }
    }

    public func pastStates(
        tenant: String,
        environment: String,
        atOrBeforeMicros micros: Int64
    ) async throws -> [(current: ConfigEntry, past: PastState)] {
        try TenantNames.checkLocal(tenant)
        let stored = TenantNames.stored(tenant: tenant, environment: environment)
        return try await database.snapshot { tx in
            let entries = try await Self.entries(
                tx.query("SELECT \(unescaped: Self.entryColumns) FROM entries WHERE environment = \(stored) ORDER BY key")
            )
            var out: [(current: ConfigEntry, past: PastState)] = []
            for entry in entries { out.append((entry, try await tx.pastState(stored, entry.key, atOrBeforeMicros: micros))) }
            return out
        }
    }

    public func rollback(
        _ name: EntryName,
        category: String?,
        ciphertext: String,
        actor: String?,
        audit: AuditRecordDraft?,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> (ConfigEntry, version: Int) {
        let environment = try TenantNames.stored(name)
        let plan = self.plan
        return try await commit(audit: audit) { tx in
            let current = try await tx.current(environment, name.key)
            let (revision, delta) = try plan.rollback(
                environment: environment,
                key: name.key,
                current: current,
                category: category,
                ciphertext: ciphertext,
                actor: actor,
                authenticates: authenticates
            )
            let entry = try await tx.record(revision, replacing: current)
            return ((entry, try await tx.versionCount(environment, name.key)), delta)
        }
    }

    public func restore(tenant: String, environment: String, changes: [PlannedRestore], actor: String?, audit: AuditRecordDraft?) async throws {
        try TenantNames.checkLocal(tenant)
        let stored = TenantNames.stored(tenant: tenant, environment: environment)
        let plan = self.plan
        _ = try await commit(audit: audit) { tx in
            var delta = 0
            for change in changes {
                let current = try await tx.current(stored, change.key)
                let (revision, d) = try plan.restore(environment: stored, change, current: current, actor: actor)
                delta += d
                _ = try await tx.record(revision, replacing: current)
            }
            return ((), delta)
        }
    }

    // MARK: Audit

    public func appendAudit(_ draft: AuditRecordDraft) async throws -> AuditRecord {
        try await groupCommit.audit(draft)
    }

    public func auditRecords(_ filter: AuditFilter, afterID: Int64?, limit: Int) async throws -> [AuditRecord] {
        var sql = "SELECT \(PostgresTransaction.auditColumns) FROM audit_log WHERE TRUE"
        var binds = PostgresBindings()
        func bind(_ value: some PostgresDynamicTypeEncodable) -> String { binds.placeholder(value) }
        if let v = filter.key { sql += " AND key = \(bind(v))" }
        if let v = filter.environment {
            sql += " AND environment = \(bind(filter.tenant.map { TenantNames.stored(tenant: $0, environment: v) } ?? v))"
        }
        if let tenant = filter.tenant {
            if tenant == Revision.defaultTenant {
                sql += " AND (environment IS NULL OR substr(environment, 1, 1) <> chr(2))"
            } else {
                sql +=
                    " AND environment >= \(bind(TenantNames.stored(tenant: tenant, environment: ""))) AND environment < \(bind("\u{2}\(tenant)\u{3}"))"
            }
        }
        if let v = filter.action { sql += " AND action = \(bind(v))" }
        if let v = filter.actor { sql += " AND actor = \(bind(v))" }
        if let v = filter.outcome { sql += " AND outcome = \(bind(v))" }
        if let v = filter.since { sql += " AND time >= \(bind(v))" }
        if let v = filter.until { sql += " AND time <= \(bind(v))" }
        if let v = afterID { sql += " AND id > \(bind(v))" }
        sql += " ORDER BY id LIMIT \(bind(max(0, limit)))"
        let query = PostgresQuery(unsafeSQL: sql, binds: binds)
        return try await database.run { client in try await PostgresTransaction.auditRecords(client.query(query)) }
    }

    public func auditRecordCount() async throws -> Int64 {
        try await database.run { client in
            var n: Int64 = 0
            for try await v in try await client.query("SELECT last_id FROM audit_head WHERE singleton = 1").decode(Int64.self) { n = v }
            return n
        }
    }

    /// Re-computes the whole chain over one snapshot, in pages, with the same verifier as SQLite.
    public func verifyAudit() async throws -> AuditVerification {
        try await database.snapshot(timeout: .seconds(600)) { tx in
            var head: (Int64, String)?
            for try await h in try await tx.query("SELECT last_id, hash FROM audit_head WHERE singleton = 1").decode((Int64, String).self) {
                head = h
            }
            guard let (headID, headHash) = head else {
                return AuditVerification(valid: false, records: 0, firstBroken: 1, headHash: AuditChain.genesisHex)
            }
            var verifier = AuditChainVerifier()
            var after: Int64 = -1
            while true {
                let page = try await PostgresTransaction.auditRecords(
                    tx.query("SELECT \(unescaped: PostgresTransaction.auditColumns) FROM audit_log WHERE id > \(after) ORDER BY id LIMIT 5000")
                )
                for record in page { verifier.add(record) }
                guard let last = page.last else { break }
                after = last.id
            }
            return verifier.result(headID: headID, headHash: headHash)
        }
    }

    // MARK: Change feed

    public func changes(after seq: Int64, limit: Int) async throws -> ChangeFeedPage {
        let limit = max(1, limit)
        return try await database.run { client in
            // Writes are serialised, each superseding the key's newest revision: what the key was
            // just before a revision is the revision before it (kept, or pruned).
            let rows = try await client.query(
                """
                SELECT r.seq, \(unescaped: Self.revisionColumns.split(separator: ",").map { "r." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")),
                  COALESCE(
                    (SELECT p.deleted FROM revisions p WHERE p.environment = r.environment AND p.key = r.key AND p.seq < r.seq ORDER BY p.seq DESC LIMIT 1),
                    (SELECT q.deleted FROM pruned_revisions q WHERE q.environment = r.environment AND q.key = r.key AND q.seq < r.seq ORDER BY q.seq DESC LIMIT 1)
                  ) AS before_deleted
                FROM revisions r WHERE r.seq > \(seq) ORDER BY r.seq LIMIT \(limit)
                """
            )
            var changes: [StoredChange] = []
            var through = seq
            for try await row in rows {
                let cells = row.makeRandomAccess()
                let localSeq = try cells[0].decode(Int64.self)
                through = localSeq
                let revision = try Self.revision(cells, from: 1)
                let before = try cells[13].decode(Bool?.self)
                if let change = StoredChange.classify(seq: localSeq, revision, deletedBefore: before) { changes.append(change) }
            }
            return ChangeFeedPage(changes: changes, through: through)
        }
    }

    public func lastChangeSeq() async throws -> Int64 { try await counter("last_seq") }

    public func changeFeedHorizon() async throws -> Int64 { try await counter("pruned_through_seq") }

    private func counter(_ name: String) async throws -> Int64 {
        try await database.run { client in
            var v: Int64 = 0
            for try await n in try await client.query("SELECT value FROM counters WHERE name = \(name)").decode(Int64.self) { v = n }
            return v
        }
    }

    // MARK: Writing

    /// Runs `body` in the next group commit, whose transaction holds the write lock (the
    /// `last_seq` row) from its first statement; `audit`, when given, commits with it. Every
    /// node's change feed is notified at commit.
    func commit<T: Sendable>(audit: AuditRecordDraft?, _ body: @escaping @Sendable (PostgresTransaction) async throws -> (T, Int)) async throws -> T {
        let (value, live) = try await groupCommit.write { tx in
            let (value, delta) = try await body(tx)
            var live: Int64?
            if delta != 0 {
                for try await n in try await tx.query("UPDATE counters SET value = value + \(delta) WHERE name = 'live_entries' RETURNING value")
                    .decode(Int64.self)
                {
                    live = n
                }
            }
            if let audit { _ = try await tx.appendAudits([audit]) }
            return (value, live)
        }
        if let live { liveEntries.withLock { $0 = Int(live) } }
        commits.signal()
        return value
    }

    // MARK: Rows

    static func entries(_ rows: PostgresRowSequence) async throws -> [ConfigEntry] {
        var out: [ConfigEntry] = []
        for try await row in rows {
            let c = row.makeRandomAccess()
            let (tenant, environment) = TenantNames.split(try c[1].decode(String.self))
            out.append(
                ConfigEntry(
                    id: try c[0].decode(Int64.self),
                    tenant: tenant,
                    environment: environment,
                    key: try c[2].decode(String.self),
                    category: try c[3].decode(String?.self),
                    ciphertext: try c[4].decode(String.self),
                    hlc: try c[5].decode(Int64.self),
                    origin: try c[6].decode(String.self),
                    deleted: try c[7].decode(Bool.self),
                    createdAt: try c[8].decode(Int64.self),
                    updatedAt: try c[9].decode(Int64.self)
                )
            )
        }
        return out
    }

    static func revisions(_ rows: PostgresRowSequence) async throws -> [Revision] {
        var out: [Revision] = []
        for try await row in rows { out.append(try revision(row.makeRandomAccess(), from: 0)) }
        return out
    }

    /// The `revisionColumns` of a row, starting at column `i`.
    static func revision(_ c: PostgresRandomAccessRow, from i: Int) throws -> Revision {
        Revision(
            environment: try c[i].decode(String.self),
            key: try c[i + 1].decode(String.self),
            category: try c[i + 2].decode(String?.self),
            ciphertext: try c[i + 3].decode(String.self),
            hlc: try c[i + 4].decode(Int64.self),
            origin: try c[i + 5].decode(String.self),
            deleted: try c[i + 6].decode(Bool.self),
            createdAt: try c[i + 7].decode(Int64.self),
            updatedAt: try c[i + 8].decode(Int64.self),
            actor: try c[i + 9].decode(String?.self),
            purgesThrough: try c[i + 10].decode(Int64?.self).flatMap { hlc in
                try c[i + 11].decode(String?.self).map { RevisionStamp(hlc: hlc, origin: $0) }
            }
        )
    }
}

extension PostgresBindings {
    /// Binds `value` and returns its placeholder (`$n`), for SQL put together clause by clause.
    mutating func placeholder(_ value: some PostgresDynamicTypeEncodable) -> String {
        append(value)
        return "$\(count)"
    }
}
