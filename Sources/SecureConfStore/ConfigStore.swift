import Foundation
import GRDB
import Logging
import Synchronization

/// The SQLite store: append-only revisions, the current entry per (environment, key),
/// node metadata. Reads run on a pool of WAL readers and never wait for writes; writes
/// are grouped into one transaction (group commit) and each returns only once durable.
public final class ConfigStore: Sendable {
    public struct Configuration: Sendable {
        public var path: String
        public var nodeID: String
        /// The most writes folded into one transaction.
        public var maxBatch: Int = 256
        public var readers: Int = 4
        /// Revisions kept per (environment, key); nil keeps every one (`OSC_MAX_VERSIONS`).
        public var maxVersions: Int?
        /// How far ahead of this node's wall clock a revision's stamp may be (`OSC_CLUSTER_MAX_CLOCK_SKEW`).
        public var maxClockAheadMillis: Int64 = 5000
        /// Current entries kept in memory for reads (ciphertext only; `OSC_READ_CACHE_ENTRIES`, 0: none).
        public var readCacheEntries = 50_000
        /// The most ciphertext bytes the read cache holds.
        public var readCacheBytes = 32 << 20

        public init(path: String, nodeID: String) {
            self.path = path
            self.nodeID = nodeID
        }
    }

    public let nodeID: String
    public let clock: HybridLogicalClock
    /// Revisions kept per (environment, key), the current one always among them; nil keeps all.
    public let maxVersions: Int?
    let pool: DatabasePool
    let writer: GroupCommitWriter
    /// Recently read current entries, kept exact by the writer connection (`EntryCache`).
    let entryCache: EntryCache
    /// Signalled after every commit (the change feed's reader waits on it).
    public let commits = WakeSignal()
    private let liveEntries: Mutex<Int>
    /// Stamps further ahead of the wall clock than this are absurd (set aside at start).
    public static let absurdStampHorizonMillis: Int64 = 86_400_000

    /// Revisions set aside at start because their stamps were absurd.
    public let setAsideAtStart: Int
    /// WAL frames an unclean stop left that SQLite did not recover at this start.
    public let walFramesNotRecovered: Int

    public init(configuration: Configuration, logger: Logger = Logger(label: "secureconf.store")) throws {
        var config = GRDB.Configuration()
        config.maximumReaderCount = max(1, configuration.readers)
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            // FULL: a commit is on disk before the write is acknowledged, even across power loss.
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // What is deleted or overwritten (a purged revision, an entry's previous value) is
            // zeroed in the file, not left in free space for whoever copies it.
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        _ = WALRecovery.installed
        let walPath = configuration.path + "-wal"
        let walFrames = WALRecovery.frames(inWALAt: walPath)
        let created = !FileManager.default.fileExists(atPath: configuration.path)
        let oldMask = umask(0o077)
        defer { umask(oldMask) }
        pool = try DatabasePool(path: configuration.path, configuration: config)
        if created { chmod(configuration.path, 0o600) }
        try Schema.migrator.migrate(pool)
        if walFrames > 0, let recovered = WALRecovery.recoveredFrames(walPath: walPath), recovered < walFrames {
            walFramesNotRecovered = walFrames - recovered
            logger.warning(
                "SQLite recovered fewer frames than the write-ahead log held: the rest was not committed, or was damaged; writes acknowledged before the stop may be missing",
                metadata: [
                    "wal": "\(walPath)", "frames": "\(walFrames)", "recovered": "\(recovered)",
                ]
            )
        } else {
            walFramesNotRecovered = 0
        }
        nodeID = configuration.nodeID
        maxVersions = configuration.maxVersions.map { max(1, $0) }
        // Every stored stamp is checked: an absurd one (≤ 0, or more than a day ahead of the
        // wall clock: written by a hostile peer before the checks existed) would win every
        // conflict and could not be superseded; it is set aside. A stamp only somewhat ahead (the
        // wall clock stepped back, a node started before NTP) is kept: the clock does not jump to
        // it, local writes still stamp after it, and peers refuse it until real time catches up.
        let bound = HybridLogicalClock(maxAheadMillis: max(configuration.maxClockAheadMillis, Self.absurdStampHorizonMillis))
        let ceiling = bound.ceiling()
        let absurd = try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT environment, key, hlc, origin FROM revisions WHERE hlc > ? OR hlc <= 0", arguments: [ceiling])
                .map {
                    RevisionIdentity(
                        tenant: Revision.defaultTenant,
                        environment: $0["environment"],
                        key: $0["key"],
                        hlc: $0["hlc"],
                        origin: $0["origin"]
                    )
                }
        }
        if !absurd.isEmpty {
            try pool.write { db in
                let delta = try Self.setAside(absurd, reason: "stamped more than a day ahead of the clock, or not positive, at start", db: db)
                if delta != 0 {
                    try db.execute(sql: "UPDATE counters SET value = value + ? WHERE name = 'live_entries'", arguments: [delta])
                }
            }
        }
        let setAside = absurd.count
        setAsideAtStart = setAside
        if setAside > 0 {
            logger.critical(
                "revisions with absurd stamps (more than a day ahead, or not positive) were set aside",
                metadata: [
                    "revisions": "\(setAside)", "max_clock_skew_ms": "\(configuration.maxClockAheadMillis)",
                ]
            )
        }
        let (count, maxHLC) = try pool.read { db in
            (
                try Int.fetchOne(db, sql: "SELECT value FROM counters WHERE name = 'live_entries'") ?? 0,
                try Int64.fetchOne(db, sql: "SELECT MAX(hlc) FROM revisions") ?? 0
            )
        }
        liveEntries = Mutex(count)
        clock = HybridLogicalClock(startingAfter: maxHLC, maxAheadMillis: configuration.maxClockAheadMillis)
        writer = GroupCommitWriter(pool: pool, maxBatch: configuration.maxBatch, logger: logger)
        let cache = EntryCache(capacity: configuration.readCacheEntries, maxBytes: configuration.readCacheBytes)
        entryCache = cache
        pool.writeWithoutTransaction { db in db.add(transactionObserver: cache) }
    }

    /// After a purge: the write-ahead log is checkpointed and emptied, so the purged
    /// ciphertexts' old pages are not left in it either (in the background; best effort, a
    /// later purge or the close at shutdown does it otherwise).
    func eraseLogAfterPurge() {
        let pool = self.pool
        Task.detached(priority: .background) {
            try? await pool.writeWithoutTransaction { db in
                // Waiting for readers holds up the writes queued behind: 100 ms at most, then
                // it is left to the next purge or to the close.
                try db.execute(sql: "PRAGMA busy_timeout = 100")
                defer { try? db.execute(sql: "PRAGMA busy_timeout = 10000") }
                try db.checkpoint(.truncate)
            }
        }
    }

    /// Closes the database after pending writes have finished.
    public func close() async {
        await writer.drain()
        try? pool.close()
    }

    /// Why storage refuses writes (disk full, read-only), or nil when it takes them: after a
    /// failed commit, a small write is tried again to see whether storage has recovered.
    public func writeRefusal() async -> String? {
        guard writer.lastFailure.withLock({ $0 }) != nil else { return nil }
        do {
            _ = try await commit(audit: nil) { db in
                try db.execute(
                    sql: "INSERT INTO meta(name, value) VALUES ('ready_probe', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    arguments: [String(Self.nowMicros())]
                )
                return ((), 0)
            }
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Live (not deleted) entries across all environments, kept without scanning.
    public var liveEntryCount: Int { liveEntries.withLock { $0 } }

    // MARK: Metadata

    public func metadata(_ name: String) throws -> String? {
        try pool.read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE name = ?", arguments: [name]) }
    }

    public func setMetadata(_ name: String, _ value: String) throws {
        try pool.write { db in
            try db.execute(
                sql: "INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                arguments: [name, value]
            )
        }
    }

    public func claimMetadata(_ name: String, _ value: String) throws -> String {
        try pool.write { db in
            try db.execute(sql: "INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING", arguments: [name, value])
            return try String.fetchOne(db, sql: "SELECT value FROM meta WHERE name = ?", arguments: [name]) ?? value
        }
    }

    /// Whether any revision was ever written (data exists that a salt must match).
    public func hasData() throws -> Bool {
        try pool.read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM revisions)") ?? false }
    }

    // MARK: Reads

    /// The live entry for (environment, key), or nil when absent or deleted.
    public func entry(environment: String, key: String) async throws -> ConfigEntry? {
        let name = EntryCache.Name(environment: environment, key: key)
        let (cached, generation) = entryCache.lookup(name)
        if let cached { return cached }
        let found = try await pool.read { db in
            let statement = try db.cachedStatement(
                sql: "SELECT \(ConfigEntry.columns) FROM entries WHERE environment = ? AND key = ? AND deleted = 0"
            )
            return try ConfigEntry.fetchOne(statement, arguments: [environment, key])
        }
        if let found { entryCache.fill(name, found, generation: generation) }
        return found
    }

    /// Live entries in creation order, optionally filtered, paginated by `afterID` (cursor) or `offset`.
    /// `includeDeleted` adds tombstoned entries (federated merges need them).
    public func list(
        storedIn tenant: String = Revision.defaultTenant,
        environment: String?,
        category: String?,
        limit: Int? = nil,
        offset: Int = 0,
        afterID: Int64? = nil,
        includeDeleted: Bool = false
    ) async throws -> [ConfigEntry] {
        try await pool.read { db in
            var sql = "SELECT \(ConfigEntry.columns) FROM entries WHERE \(includeDeleted ? "1" : "deleted = 0")"
            var arguments: StatementArguments = []
            if let environment {
                sql += " AND environment = ?"
                arguments += [environment]
            } else if tenant == Revision.defaultTenant {
                // Users and tokens are no configuration (only asked for by their environment);
                // other tenants' names start with the separator.
                sql += " AND environment <> ? AND substr(environment, 1, 1) <> char(2)"
                arguments += [EntryNames.identityEnvironment]
            } else {
                // The tenant's stored names: from "\u{2}tenant\u{2}" up to "\u{2}tenant\u{3}".
                sql += " AND environment > ? AND environment < ?"
                arguments += [TenantNames.stored(tenant: tenant, environment: ""), "\u{2}\(tenant)\u{3}"]
            }
            if let category { sql += " AND category = ?"; arguments += [category] }
            if let afterID { sql += " AND id > ?"; arguments += [afterID] }
            sql += " ORDER BY id LIMIT ? OFFSET ?"
            arguments += [limit ?? -1, offset]
            return try ConfigEntry.fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
        }
    }

    /// Every revision of (environment, key), oldest first in (hlc, origin) order.
    public func revisions(environment: String, key: String) async throws -> [Revision] {
        try await pool.read { db in
            try Revision.fetchAll(
                db,
                sql: """
                    SELECT \(Self.revisionColumns)
                    FROM revisions WHERE environment = ? AND key = ? ORDER BY hlc, origin
                    """,
                arguments: [environment, key]
            )
        }
    }

    /// SQLite's own consistency check ("ok" when healthy).
    public func integrityCheck() async throws -> String {
        try await pool.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") ?? "unknown" }
    }

    // MARK: Writes

    /// What this node's writes make of the current entry (`WritePlan`).
    var plan: WritePlan { WritePlan(origin: nodeID, clock: clock) }

    /// Creates (environment, key); a tombstoned key may be created again.
    public func create(
        environment: String,
        key: String,
        category: String?,
        ciphertext: String,
        actor: String? = nil,
        audit: AuditRecordDraft? = nil
    ) async throws -> ConfigEntry {
        let (plan, keep) = (self.plan, maxVersions)
        return try await commit(audit: audit) { db in
            let current = try Self.currentRow(db, environment: environment, key: key)
            let (revision, delta) = try plan.create(
                environment: environment,
                key: key,
                current: current,
                category: category,
                ciphertext: ciphertext,
                actor: actor
            )
            return (try Self.record(revision, replacing: current, keep: keep, db: db), delta)
        }
    }

    /// Replaces the value of a live entry whose current ciphertext `authenticates` accepts.
    /// A nil category keeps the current one.
    public func update(
        environment: String,
        key: String,
        category: String?,
        ciphertext: String,
        actor: String? = nil,
        audit: AuditRecordDraft? = nil,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> ConfigEntry {
        let (plan, keep) = (self.plan, maxVersions)
        return try await commit(audit: audit) { db in
            let current = try Self.currentRow(db, environment: environment, key: key)
            let (revision, delta) = try plan.update(
                environment: environment,
                key: key,
                current: current,
                category: category,
                ciphertext: ciphertext,
                actor: actor,
                authenticates: authenticates
            )
            return (try Self.record(revision, replacing: current, keep: keep, db: db), delta)
        }
    }

    /// Deletes a live entry (writes a tombstone revision) whose ciphertext `authenticates` accepts.
    public func delete(
        environment: String,
        key: String,
        actor: String? = nil,
        audit: AuditRecordDraft? = nil,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws {
        let (plan, keep) = (self.plan, maxVersions)
        _ = try await commit(audit: audit) { db in
            let current = try Self.currentRow(db, environment: environment, key: key)
            let (revision, delta) = try plan.delete(environment: environment, key: key, current: current, actor: actor, authenticates: authenticates)
            return (try Self.record(revision, replacing: current, keep: keep, db: db), delta)
        }
    }

    // MARK: Internals

    static func nowMicros() -> Int64 { WritePlan.nowMicros() }

    static func currentRow(_ db: Database, environment: String, key: String) throws -> ConfigEntry? {
        try ConfigEntry.fetchOne(
            db.cachedStatement(sql: "SELECT \(ConfigEntry.columns) FROM entries WHERE environment = ? AND key = ?"),
            arguments: [environment, key]
        )
    }

    static let insertRevisionSQL = Revision.insertSQL("revisions", extra: ["bucket", "content_hash"])
    static let insertSetAsideSQL = Revision.insertSQL("set_aside_revisions", extra: ["reason", "set_aside_at"], or: "INSERT OR IGNORE")
    static let insertEntrySQL = Revision.insertSQL("entries", entry: true)
    /// Everything of an entry but its identity (environment, key), by row id.
    static let updateEntrySQL =
        "UPDATE entries SET "
        + Revision.Columns.allCases.filter { $0.inEntries && $0 != .environment && $0 != .key }.map { "\($0.rawValue) = ?" }
        .joined(separator: ", ") + " WHERE id = ?"

    static func insertRevision(_ r: Revision, db: Database) throws {
        let bucket = RevisionDigest.bucket(tenant: r.tenant, environment: r.environment, key: r.key)
        let hash = RevisionDigest.contentHash(r)
        try db.cachedStatement(sql: Self.insertRevisionSQL)
            .execute(arguments: StatementArguments(r.columnValues + [bucket, Data(hash)]))
        try RevisionDigest.add(hash: hash, bucket: bucket, db: db)
    }

    /// Removes one stored revision (by its row) from history and from the digest.
    static func removeRevision(seq: Int64, _ r: Revision, db: Database) throws {
        try db.cachedStatement(sql: "DELETE FROM revisions WHERE seq = ?").execute(arguments: [seq])
        try RevisionDigest.remove(
            hash: RevisionDigest.contentHash(r),
            bucket: RevisionDigest.bucket(tenant: r.tenant, environment: r.environment, key: r.key),
            db: db
        )
    }

    /// Drops the revisions of (environment, key) up to the furthest purge bound among its
    /// revisions (`Revision.purgesThrough`; set-aside copies too), then the oldest beyond the
    /// newest `keep`, remembering their identities so version numbers stay put and no peer
    /// brings them back. A bound is older than the revision that carries it, and the current
    /// revision is the newest, so it is never dropped.
    static func prune(environment: String, key: String, keep: Int?, db: Database) throws {
        var surplus: [Row] = []
        if let bound = try Row.fetchOne(
            db.cachedStatement(
                sql: """
                    SELECT purges_through_hlc, purges_through_origin FROM revisions
                    WHERE environment = ? AND key = ? AND purges_through_hlc IS NOT NULL
                    ORDER BY purges_through_hlc DESC, purges_through_origin DESC LIMIT 1
                    """
            ),
            arguments: [environment, key]
        ) {
            let (hlc, origin): (Int64, String) = (bound[0], bound[1])
            let through: StatementArguments = [environment, key, hlc, hlc, origin]
            surplus = try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT seq, \(revisionColumns) FROM revisions WHERE environment = ? AND key = ?
                        AND (hlc < ? OR (hlc = ? AND origin <= ?))
                        """
                ),
                arguments: through
            )
            try db.cachedStatement(
                sql: "DELETE FROM set_aside_revisions WHERE environment = ? AND key = ? AND (hlc < ? OR (hlc = ? AND origin <= ?))"
            ).execute(arguments: through)
        }
        if let keep {
            let seen = Set(surplus.map { $0["seq"] as Int64 })
            surplus += try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT seq, \(revisionColumns) FROM revisions WHERE environment = ? AND key = ?
                        ORDER BY hlc DESC, origin DESC LIMIT -1 OFFSET ?
                        """
                ),
                arguments: [environment, key, max(1, keep)]
            ).filter { !seen.contains($0["seq"]) }
        }
        for row in surplus {
            let pruned = Revision(row: row)
            try db.cachedStatement(
                sql: "INSERT OR IGNORE INTO pruned_revisions(environment, key, hlc, origin, deleted, seq) VALUES (?, ?, ?, ?, ?, ?)"
            )
            .execute(arguments: [environment, key, pruned.hlc, pruned.origin, pruned.deleted, row["seq"] as Int64])
            // Pruned revisions leave the digest too, so pruned nodes still compare equal.
            try removeRevision(seq: row["seq"], pruned, db: db)
            try db.cachedStatement(sql: "UPDATE counters SET value = MAX(value, ?) WHERE name = 'pruned_through_seq'")
                .execute(arguments: [row["seq"] as Int64])
        }
    }

    /// Makes the entry of (environment, key) the newest revision left in its history (or
    /// removes the entry when none is left); returns the change to the live-entry count.
    static func refreshEntry(environment: String, key: String, db: Database) throws -> Int {
        let current = try currentRow(db, environment: environment, key: key)
        let wasLive = current.map { !$0.deleted } ?? false
        guard
            let newest = try Revision.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT \(revisionColumns) FROM revisions WHERE environment = ? AND key = ? ORDER BY hlc DESC, origin DESC LIMIT 1
                        """
                ),
                arguments: [environment, key]
            )
        else {
            if let current { try db.cachedStatement(sql: "DELETE FROM entries WHERE id = ?").execute(arguments: [current.id]) }
            return wasLive ? -1 : 0
        }
        if let current, current.hlc == newest.hlc, current.origin == newest.origin, current.ciphertext == newest.ciphertext,
            current.deleted == newest.deleted, current.category == newest.category, current.createdAt == newest.createdAt,
            current.updatedAt == newest.updatedAt
        {
            return 0
        }
        _ = try writeEntry(newest, replacing: current, db: db)
        return (newest.deleted ? 0 : 1) - (wasLive ? 1 : 0)
    }

    /// Moves the revisions with these identities out of history into `set_aside_revisions`
    /// (and their identities into `refused_revisions`, so that no peer brings them back),
    /// then refreshes the affected entries; returns the change to the live-entry count.
    static func setAside(_ ids: [RevisionIdentity], reason: String, db: Database) throws -> Int {
        var touched = Set<[String]>()
        let find = try db.cachedStatement(
            sql: """
                SELECT seq, \(revisionColumns) FROM revisions WHERE environment = ? AND key = ? AND hlc = ? AND origin = ?
                """
        )
        for id in ids {
            try db.cachedStatement(sql: "INSERT OR IGNORE INTO refused_revisions(environment, key, hlc, origin) VALUES (?, ?, ?, ?)")
                .execute(arguments: [id.environment, id.key, id.hlc, id.origin])
            guard let row = try Row.fetchOne(find, arguments: [id.environment, id.key, id.hlc, id.origin]) else { continue }
            let r = Revision(row: row)
            try db.cachedStatement(sql: Self.insertSetAsideSQL)
                .execute(arguments: StatementArguments(r.columnValues + [reason, nowMicros()]))
            try removeRevision(seq: row["seq"], r, db: db)
            touched.insert([r.environment, r.key])
        }
        var delta = 0
        for t in touched { delta += try refreshEntry(environment: t[0], key: t[1], db: db) }
        return delta
    }

    /// Appends `r` to history (pruned to `keep` revisions) and makes it the current entry.
    static func record(_ r: Revision, replacing current: ConfigEntry?, keep: Int?, db: Database) throws -> ConfigEntry {
        try insertRevision(r, db: db)
        try prune(environment: r.environment, key: r.key, keep: keep, db: db)
        return try writeEntry(r, replacing: current, db: db)
    }

    /// Makes `r` the current entry of its (environment, key), in place of `current`.
    static func writeEntry(_ r: Revision, replacing current: ConfigEntry?, db: Database) throws -> ConfigEntry {
        let id: Int64
        if let current {
            id = current.id
            try db.cachedStatement(sql: Self.updateEntrySQL)
                .execute(arguments: StatementArguments(Array(r.entryColumnValues.dropFirst(2)) + [id]))
        } else {
            try db.cachedStatement(sql: Self.insertEntrySQL).execute(arguments: StatementArguments(r.entryColumnValues))
            id = db.lastInsertedRowID
        }
        return ConfigEntry(r, id: id)
    }

    /// Runs `body` in the next group commit; `body` returns its result and its change
    /// to the live-entry count. `audit`, when given, is appended to the audit trail in the
    /// same savepoint: it is durable exactly when the write is. Returns once the
    /// transaction is durable.
    func commit<T: Sendable>(audit: AuditRecordDraft?, _ body: @escaping @Sendable (Database) throws -> (T, Int)) async throws -> T {
        let (value, delta) = try await writer.submit { db in
            let (value, delta) = try body(db)
            if delta != 0 {
                try db.cachedStatement(sql: "UPDATE counters SET value = value + ? WHERE name = 'live_entries'").execute(arguments: [delta])
            }
            if let audit { _ = try Self.appendAudit(audit, db: db) }
            return (value, delta)
        }
        if delta != 0 { liveEntries.withLock { $0 += delta } }
        commits.signal()
        return value
    }
}

extension ConfigEntry {
    public init(
        id: Int64,
        tenant: String = Revision.defaultTenant,
        environment: String,
        key: String,
        category: String?,
        ciphertext: String,
        hlc: Int64,
        origin: String,
        deleted: Bool,
        createdAt: Int64,
        updatedAt: Int64
    ) {
        self.id = id
        self.tenant = tenant
        self.environment = environment
        self.key = key
        self.category = category
        self.ciphertext = ciphertext
        self.hlc = hlc
        self.origin = origin
        self.deleted = deleted
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}
