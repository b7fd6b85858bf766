import Foundation
import GRDB
import SecureConfCrypto

/// A deleted key whose history was collected (`OSC_TOMBSTONE_HORIZON`): its revisions up to
/// and including the tombstone (hlc, origin) are gone on every node, and none of them is
/// ever taken back. `deletedAt` is the tombstone's `updated_at`, `collectedAt` when its origin
/// collected it (microseconds): every node keeps the marker until one horizon after that.
public struct CollectedMarker: Sendable, Equatable, Hashable, Codable {
    public var environment: String
    public var key: String
    public var hlc: Int64
    public var origin: String
    public var deletedAt: Int64
    public var collectedAt: Int64

    public init(environment: String, key: String, hlc: Int64, origin: String, deletedAt: Int64, collectedAt: Int64) {
        self.environment = environment
        self.key = key
        self.hlc = hlc
        self.origin = origin
        self.deletedAt = deletedAt
        self.collectedAt = collectedAt
    }

    enum CodingKeys: String, CodingKey {
        case environment, key, hlc, origin
        case deletedAt = "deleted_at"
        case collectedAt = "collected_at"
    }

    /// The term of this marker in the collected digest: its identity (a marker collected
    /// again later, by a node that took it back in between, compares equal).
    var hash: [UInt8] {
        var bytes = Array(environment.utf8) + [0] + Array(key.utf8) + [0] + Array(origin.utf8) + [0]
        withUnsafeBytes(of: hlc.bigEndian) { bytes += $0 }
        withUnsafeBytes(of: deletedAt.bigEndian) { bytes += $0 }
        return OpenSSL.sha256(bytes)
    }
}

/// A tombstone this node may collect: its local sequence number (what the peers'
/// acknowledgements are compared with) and its marker.
public struct CollectableTombstone: Sendable, Equatable {
    public var seq: Int64
    public var marker: CollectedMarker
}

/// What collecting (or applying peers' markers) did.
public struct CollectionOutcome: Sendable, Equatable {
    /// Keys whose history left the store.
    public var keys = 0
    /// Revisions removed with them.
    public var revisions = 0
    /// Markers refused: this node holds the marked revision and it is not a delete.
    public var refused = 0
    public init() {}
}

/// Tombstone collection: deleted keys whose tombstone is older than the horizon and held
/// by every peer leave the store, history and all; a marker per key keeps any copy of
/// their revisions from coming back. Off unless `OSC_TOMBSTONE_HORIZON` is set.
public protocol CollectionStorage: Sendable {
    /// Tombstones that are their key's current revision, written before `micros`, oldest
    /// first; only `origin`'s when given; never users' and tokens'.
    func collectableTombstones(deletedBeforeMicros micros: Int64, origin: String?, limit: Int) async throws -> [CollectableTombstone]
    /// Collects these keys: each only if its tombstone is still the current revision.
    func collect(_ markers: [CollectedMarker]) async throws -> CollectionOutcome
    /// Applies markers a peer collected: each key's revisions up to the marked one leave
    /// the store, unless this node holds the marked revision as something other than a delete.
    func applyCollected(_ markers: [CollectedMarker]) async throws -> CollectionOutcome
    /// Markers after (environment, key) in that order, at most `limit`.
    func collectedMarkers(after: (environment: String, key: String)?, limit: Int) async throws -> [CollectedMarker]
    /// The marker of (environment, key), if its history was collected.
    func collectedMarker(_ name: EntryName) async throws -> CollectedMarker?
    /// Drops markers collected before `micros`; returns how many.
    func expireCollected(collectedBeforeMicros micros: Int64) async throws -> Int
    /// Moves the live history into `set_aside_revisions` (a node that was away longer than the
    /// horizon refills from its peers instead of merging its stale history), all but this
    /// node's own writes since `keep` (microseconds); returns how many. Their identities are not
    /// refused: peers' copies come back.
    func setAsideAllForRejoin(reason: String, keepingOwnSinceMicros keep: Int64) async throws -> Int
}

extension ConfigStore: CollectionStorage {
    public func collectableTombstones(deletedBeforeMicros micros: Int64, origin: String?, limit: Int) async throws -> [CollectableTombstone] {
        let now = Self.nowMicros()
        return try await pool.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT r.seq, e.environment, e.key, e.hlc, e.origin, e.updated_at FROM entries e
                        JOIN revisions r ON r.environment = e.environment AND r.key = e.key AND r.hlc = e.hlc AND r.origin = e.origin
                        WHERE e.deleted = 1 AND e.updated_at < ? AND (? IS NULL OR e.origin = ?) AND e.environment != ?
                        ORDER BY e.updated_at LIMIT ?
                        """
                ),
                // Users and tokens are never collected: a revocation stays a tombstone.
                arguments: [micros, origin, origin, EntryNames.identityEnvironment, max(1, limit)]
            ).map {
                CollectableTombstone(
                    seq: $0["seq"],
                    marker: CollectedMarker(
                        environment: $0["environment"],
                        key: $0["key"],
                        hlc: $0["hlc"],
                        origin: $0["origin"],
                        deletedAt: $0["updated_at"],
                        collectedAt: now
                    )
                )
            }
        }
    }

    public func collect(_ markers: [CollectedMarker]) async throws -> CollectionOutcome {
        try await collect(markers, fromPeer: false)
    }

    public func applyCollected(_ markers: [CollectedMarker]) async throws -> CollectionOutcome {
        for m in markers where m.hlc > 0 { _ = clock.observe(m.hlc) }
        return try await collect(markers, fromPeer: true)
    }

    private func collect(_ markers: [CollectedMarker], fromPeer: Bool) async throws -> CollectionOutcome {
        guard !markers.isEmpty else { return CollectionOutcome() }
        return try await commit(audit: nil) { db in
            var outcome = CollectionOutcome()
            var delta = 0
            for m in markers {
                let current = try Self.currentRow(db, environment: m.environment, key: m.key)
                if !fromPeer {
                    // Collected here only while the tombstone is still what the key is.
                    guard let current, current.deleted, current.hlc == m.hlc, current.origin == m.origin else { continue }
                } else if let held = try Bool.fetchOne(
                    db.cachedStatement(sql: "SELECT deleted FROM revisions WHERE environment = ? AND key = ? AND hlc = ? AND origin = ?"),
                    arguments: [m.environment, m.key, m.hlc, m.origin]
                ), !held {
                    outcome.refused += 1
                    continue
                }
                let existing = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT hlc, origin FROM collected_keys WHERE environment = ? AND key = ?"),
                    arguments: [m.environment, m.key]
                ).map { ($0["hlc"] as Int64, $0["origin"] as String) }
                if let existing, (m.hlc, m.origin) < existing { continue }
                let through: StatementArguments = [m.environment, m.key, m.hlc, m.hlc, m.origin]
                let rows = try Row.fetchAll(
                    db.cachedStatement(
                        sql: """
                            SELECT seq, \(Self.revisionColumns) FROM revisions WHERE environment = ? AND key = ?
                            AND (hlc < ? OR (hlc = ? AND origin <= ?))
                            """
                    ),
                    arguments: through
                )
                for row in rows {
                    try Self.removeRevision(seq: row["seq"], Revision(row: row), db: db)
                    try db.cachedStatement(sql: "UPDATE counters SET value = MAX(value, ?) WHERE name = 'pruned_through_seq'")
                        .execute(arguments: [row["seq"] as Int64])
                }
                try db.cachedStatement(
                    sql: "DELETE FROM pruned_revisions WHERE environment = ? AND key = ? AND (hlc < ? OR (hlc = ? AND origin <= ?))"
                ).execute(arguments: through)
                if let existing, existing == (m.hlc, m.origin) {
                    // The same marker collected again: it lasts from the later collection.
                    try db.cachedStatement(sql: "UPDATE collected_keys SET collected_at = MAX(collected_at, ?) WHERE environment = ? AND key = ?")
                        .execute(arguments: [m.collectedAt, m.environment, m.key])
                } else {
                    try Self.setCollectedMarker(m, db: db)
                }
                if current != nil { delta += try Self.refreshEntry(environment: m.environment, key: m.key, db: db) }
                guard existing == nil || existing! != (m.hlc, m.origin) || !rows.isEmpty else { continue }
                outcome.keys += 1
                outcome.revisions += rows.count
            }
            return (outcome, delta)
        }
    }

    /// Records `m` as the key's marker (replacing an older one) and folds it into the digest.
    static func setCollectedMarker(_ m: CollectedMarker, db: Database) throws {
        if let old = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT \(markerColumns) FROM collected_keys WHERE environment = ? AND key = ?"),
            arguments: [m.environment, m.key]
        ) {
            try foldCollected(CollectedMarker(row: old).hash, countDelta: -1, db: db)
        }
        try db.cachedStatement(
            sql: """
                INSERT INTO collected_keys(\(markerColumns)) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(environment, key) DO UPDATE SET hlc = excluded.hlc, origin = excluded.origin,
                    deleted_at = excluded.deleted_at, collected_at = excluded.collected_at
                """
        ).execute(arguments: [m.environment, m.key, m.hlc, m.origin, m.deletedAt, m.collectedAt])
        try foldCollected(m.hash, countDelta: 1, db: db)
    }

    static func foldCollected(_ h: [UInt8], countDelta: Int, db: Database) throws {
        var combined = [UInt8](try Data.fetchOne(db, sql: "SELECT hash FROM collected_digest WHERE singleton = 1") ?? Data())
        if combined.count != 32 { combined = [UInt8](repeating: 0, count: 32) }
        for i in 0..<32 { combined[i] ^= h[i] }
        try db.execute(
            sql: "UPDATE collected_digest SET hash = ?, count = count + ? WHERE singleton = 1",
            arguments: [Data(combined), countDelta]
        )
    }

    /// The collected digest (hex XOR of the markers' hashes) and the marker count.
    static func collectedDigest(_ db: Database) throws -> (String, Int) {
        guard let row = try Row.fetchOne(db, sql: "SELECT hash, count FROM collected_digest WHERE singleton = 1") else {
            return (RevisionDigest.hex([UInt8](repeating: 0, count: 32)), 0)
        }
        return (RevisionDigest.hex([UInt8](row["hash"] as Data)), row["count"])
    }

    public func collectedMarkers(after: (environment: String, key: String)?, limit: Int) async throws -> [CollectedMarker] {
        try await pool.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT \(Self.markerColumns) FROM collected_keys
                        WHERE ? IS NULL OR environment > ? OR (environment = ? AND key > ?)
                        ORDER BY environment, key LIMIT ?
                        """
                ),
                arguments: [after?.environment, after?.environment, after?.environment, after?.key, max(1, limit)]
            )
            .map(CollectedMarker.init(row:))
        }
    }

    public func collectedMarker(_ name: EntryName) async throws -> CollectedMarker? {
        let environment = TenantNames.stored(tenant: name.tenant, environment: name.environment)
        return try await pool.read { db in try Self.collectedMarker(db, environment: environment, key: name.key) }
    }

    static func collectedMarker(_ db: Database, environment: String, key: String) throws -> CollectedMarker? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT \(markerColumns) FROM collected_keys WHERE environment = ? AND key = ?"),
            arguments: [environment, key]
        )
        .map(CollectedMarker.init(row:))
    }

    public func expireCollected(collectedBeforeMicros micros: Int64) async throws -> Int {
        try await commit(audit: nil) { db in
            let old = try Row.fetchAll(
                db,
                sql: "SELECT \(Self.markerColumns) FROM collected_keys WHERE collected_at < ? LIMIT 10000",
                arguments: [micros]
            )
            .map(CollectedMarker.init(row:))
            for m in old {
                try db.execute(sql: "DELETE FROM collected_keys WHERE environment = ? AND key = ?", arguments: [m.environment, m.key])
                try Self.foldCollected(m.hash, countDelta: -1, db: db)
            }
            return (old.count, 0)
        }
    }

    public func setAsideAllForRejoin(reason: String, keepingOwnSinceMicros keep: Int64) async throws -> Int {
        let origin = nodeID
        return try await commit(audit: nil) { db in
            let stale = "NOT (origin = ? AND updated_at >= ?)"
            let arguments: StatementArguments = [origin, keep]
            let moved = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM revisions WHERE \(stale)", arguments: arguments) ?? 0
            guard moved > 0 else { return (0, 0) }
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO set_aside_revisions(\(Revision.columns), reason, set_aside_at)
                    SELECT \(Revision.columns), ?, ? FROM revisions WHERE \(stale)
                    """,
                arguments: [reason, Self.nowMicros()] + arguments
            )
            try db.execute(
                sql: """
                    UPDATE counters SET value = MAX(value, COALESCE((SELECT MAX(seq) FROM revisions WHERE \(stale)), 0))
                    WHERE name = 'pruned_through_seq'
                    """,
                arguments: arguments
            )
            try db.execute(sql: "DELETE FROM revisions WHERE \(stale)", arguments: arguments)
            try RevisionDigest.rebuild(db: db)
            // Entries again from what is left: this node's own recent writes.
            let before = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM entries WHERE deleted = 0") ?? 0
            try db.execute(sql: "DELETE FROM entries")
            for row in try Row.fetchAll(db, sql: "SELECT DISTINCT environment, key FROM revisions") {
                _ = try Self.refreshEntry(environment: row["environment"], key: row["key"], db: db)
            }
            let after = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM entries WHERE deleted = 0") ?? 0
            return (moved, after - before)
        }
    }
}

extension ConfigStore {
    static let markerColumns = "environment, key, hlc, origin, deleted_at, collected_at"
}

extension CollectedMarker: FetchableRecord {
    public init(row: Row) {
        self.init(
            environment: row["environment"],
            key: row["key"],
            hlc: row["hlc"],
            origin: row["origin"],
            deletedAt: row["deleted_at"],
            collectedAt: row["collected_at"]
        )
    }
}
