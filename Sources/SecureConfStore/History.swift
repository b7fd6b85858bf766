import Foundation
import GRDB

/// A revision with its version number: its position (from 1) in the key's history ordered
/// by (hlc, origin), counting revisions pruned by `OSC_MAX_VERSIONS`, so every node of a
/// converged cluster numbers the same revision the same way.
public struct NumberedRevision: Sendable, Equatable {
    public var version: Int
    public var revision: Revision

    public init(version: Int, revision: Revision) {
        self.version = version
        self.revision = revision
    }
}

/// A key's retained history, oldest first.
public struct KeyHistory: Sendable, Equatable {
    /// Older versions dropped by `OSC_MAX_VERSIONS` (they are numbered 1…prunedCount).
    public var prunedCount: Int
    public var versions: [NumberedRevision]
    /// The entry's id (the `id` of the record shape).
    public var entryID: Int64

    public init(prunedCount: Int, versions: [NumberedRevision], entryID: Int64) {
        self.prunedCount = prunedCount
        self.versions = versions
        self.entryID = entryID
    }
}

/// What (environment, key) was at a moment in the past.
public enum PastState: Sendable, Equatable {
    /// No revision at or before that moment.
    case absent
    case live(Revision)
    /// Deleted then (nil when the tombstone itself was pruned).
    case deleted(Revision?)
    /// The revision in effect then was pruned by `OSC_MAX_VERSIONS`: its value is gone.
    case pruned
    /// The key was deleted after that moment and its history collected (`OSC_TOMBSTONE_HORIZON`).
    case collected
}

/// One key's change in an environment restore, planned against the current revision
/// (`expectedHLC`, `expectedOrigin`): if that changed before commit, the restore is refused.
public struct PlannedRestore: Sendable, Equatable {
    public enum Change: Sendable, Equatable {
        /// Write this value (already encrypted) and category.
        case put(category: String?, ciphertext: String)
        /// Write a tombstone.
        case delete
    }

    public var key: String
    public var expectedHLC: Int64
    public var expectedOrigin: String
    public var change: Change
    /// The new revision removes the key's revisions up to the current one from history, on every node.
    public var purgesOlder = false

    public init(key: String, expectedHLC: Int64, expectedOrigin: String, change: Change, purgesOlder: Bool = false) {
        self.purgesOlder = purgesOlder
        self.key = key
        self.expectedHLC = expectedHLC
        self.expectedOrigin = expectedOrigin
        self.change = change
    }
}

extension HybridLogicalClock {
    /// The largest stamp whose wall-clock part is at or before `micros` (microseconds since 1970).
    public static func latestStamp(atOrBeforeMicros micros: Int64) -> Int64 {
        let millis = micros >= 0 ? micros / 1000 : (micros - 999) / 1000
        guard millis >= 0 else { return -1 }
        guard millis < (Int64(1) << 47) else { return Int64.max }
        return (millis << 16) | 0xFFFF
    }
}

extension ConfigStore {
    public static var revisionColumns: String { Revision.columns }

    // MARK: Reading history

    /// The retained history of (environment, key), deleted keys included; nil if the key never existed.
    public func history(environment: String, key: String) async throws -> KeyHistory? {
        try await pool.read { db in
            guard let entry = try Self.currentRow(db, environment: environment, key: key) else {
                if try Self.collectedMarker(db, environment: environment, key: key) != nil {
                    throw StoreError.collected(environment: environment, key: key)
                }
                return nil
            }
            let pruned = try Self.prunedCount(db, environment: environment, key: key)
            let revisions = try Revision.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT \(Self.revisionColumns) FROM revisions WHERE environment = ? AND key = ? ORDER BY hlc, origin
                        """
                ),
                arguments: [environment, key]
            )
            let numbered = revisions.enumerated().map { NumberedRevision(version: pruned + $0.offset + 1, revision: $0.element) }
            return KeyHistory(prunedCount: pruned, versions: numbered, entryID: entry.id)
        }
    }

    /// Version `version` of (environment, key) and the entry's id. Throws `notFound` if the key
    /// never existed, `versionNotFound`, or `versionPruned`; a tombstone is returned as is.
    public func version(_ version: Int, environment: String, key: String) async throws -> (NumberedRevision, entryID: Int64) {
        try await pool.read { db in
            guard let entry = try Self.currentRow(db, environment: environment, key: key) else {
                if try Self.collectedMarker(db, environment: environment, key: key) != nil {
                    throw StoreError.collected(environment: environment, key: key)
                }
                throw StoreError.notFound(environment: environment, key: key)
            }
            let pruned = try Self.prunedCount(db, environment: environment, key: key)
            guard version >= 1 else { throw StoreError.versionNotFound(environment: environment, key: key, version: version) }
            if version <= pruned { throw StoreError.versionPruned(environment: environment, key: key, version: version) }
            guard
                let revision = try Revision.fetchOne(
                    db.cachedStatement(
                        sql: """
                            SELECT \(Self.revisionColumns) FROM revisions WHERE environment = ? AND key = ? ORDER BY hlc, origin LIMIT 1 OFFSET ?
                            """
                    ),
                    arguments: [environment, key, version - pruned - 1]
                )
            else {
                throw StoreError.versionNotFound(environment: environment, key: key, version: version)
            }
            return (NumberedRevision(version: version, revision: revision), entry.id)
        }
    }

    /// What (environment, key) was at `micros` by the one rule point-in-time reads and
    /// restores share: the newest revision by (hlc, origin) among those whose origin wall
    /// time (`updated_at`) is at most `micros`. A write made before `at` is therefore never
    /// undone by a restore to `at`, whatever the stamps of other nodes' clocks.
    public func pastState(environment: String, key: String, atOrBeforeMicros micros: Int64) async throws -> (PastState, entryID: Int64?) {
        try await pool.read { db in
            let entry = try Self.currentRow(db, environment: environment, key: key)
            return (try Self.pastState(db, environment: environment, key: key, atOrBeforeMicros: micros), entry?.id)
        }
    }

    /// Every key of `environment` (deleted ones included) with its current entry and its
    /// state at `hlcLimit`, read in one snapshot.
    public func pastStates(environment: String, atOrBeforeMicros micros: Int64) async throws -> [(current: ConfigEntry, past: PastState)] {
        try await pool.read { db in
            let entries = try ConfigEntry.fetchAll(
                db.cachedStatement(sql: "SELECT \(ConfigEntry.columns) FROM entries WHERE environment = ? ORDER BY key"),
                arguments: [environment]
            )
            return try entries.map { ($0, try Self.pastState(db, environment: environment, key: $0.key, atOrBeforeMicros: micros)) }
        }
    }

    static func prunedCount(_ db: Database, environment: String, key: String) throws -> Int {
        try Int.fetchOne(
            db.cachedStatement(sql: "SELECT COUNT(*) FROM pruned_revisions WHERE environment = ? AND key = ?"),
            arguments: [environment, key]
        ) ?? 0
    }

    static func pastState(_ db: Database, environment: String, key: String, atOrBeforeMicros micros: Int64) throws -> PastState {
        if let revision = try Revision.fetchOne(
            db.cachedStatement(
                sql: """
                    SELECT \(revisionColumns) FROM revisions WHERE environment = ? AND key = ? AND updated_at <= ? ORDER BY hlc DESC, origin DESC LIMIT 1
                    """
            ),
            arguments: [environment, key, micros]
        ) {
            return revision.deleted ? .deleted(revision) : .live(revision)
        }
        // Pruned revisions are all older than retained ones: if any existed at `at`, its value is gone.
        let hlcLimit = HybridLogicalClock.latestStamp(atOrBeforeMicros: micros)
        if let prunedDeleted = try Bool.fetchOne(
            db.cachedStatement(
                sql: """
                    SELECT deleted FROM pruned_revisions WHERE environment = ? AND key = ? AND hlc <= ? ORDER BY hlc DESC, origin DESC LIMIT 1
                    """
            ),
            arguments: [environment, key, hlcLimit]
        ) {
            return prunedDeleted ? .deleted(nil) : .pruned
        }
        // Revisions up to a collected tombstone are gone: what the key was before it is not known.
        if let marker = try collectedMarker(db, environment: environment, key: key), micros <= marker.deletedAt {
            return .collected
        }
        return .absent
    }

    static func versionCount(_ db: Database, environment: String, key: String) throws -> Int {
        let retained =
            try Int.fetchOne(
                db.cachedStatement(sql: "SELECT COUNT(*) FROM revisions WHERE environment = ? AND key = ?"),
                arguments: [environment, key]
            ) ?? 0
        return retained + (try prunedCount(db, environment: environment, key: key))
    }

    // MARK: Writing from history

    /// Writes a new revision of (environment, key) holding `ciphertext` (an old version's
    /// value, re-encrypted): history only grows. A deleted key comes back; a live one must
    /// be one `authenticates` accepts. Returns the new entry and its version number.
    public func rollback(
        environment: String,
        key: String,
        category: String?,
        ciphertext: String,
        actor: String? = nil,
        audit: AuditRecordDraft? = nil,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> (ConfigEntry, version: Int) {
        let (plan, keep) = (self.plan, maxVersions)
        return try await commit(audit: audit) { db in
            let current = try Self.currentRow(db, environment: environment, key: key)
            let (revision, delta) = try plan.rollback(
                environment: environment,
                key: key,
                current: current,
                category: category,
                ciphertext: ciphertext,
                actor: actor,
                authenticates: authenticates
            )
            let entry = try Self.record(revision, replacing: current, keep: keep, db: db)
            let version = try Self.versionCount(db, environment: environment, key: key)
            return ((entry, version), delta)
        }
    }

    /// Applies an environment restore atomically: every planned key must still be at the
    /// revision the plan saw, else nothing is written and `conflict` is thrown.
    public func restore(environment: String, changes: [PlannedRestore], actor: String? = nil, audit: AuditRecordDraft? = nil) async throws {
        let (plan, keep) = (self.plan, maxVersions)
        defer { if changes.contains(where: \.purgesOlder) { eraseLogAfterPurge() } }
        _ = try await commit(audit: audit) { db in
            var delta = 0
            for change in changes {
                let current = try Self.currentRow(db, environment: environment, key: change.key)
                let (revision, d) = try plan.restore(environment: environment, change, current: current, actor: actor)
                delta += d
                _ = try Self.record(revision, replacing: current, keep: keep, db: db)
            }
            return ((), delta)
        }
    }
}
