import Foundation
import GRDB

/// What anti-entropy compares: the 256 bucket hashes and the total revision count.
public struct StoreDigest: Sendable, Codable, Equatable {
    public var digest: String
    public var revisions: Int
    public var buckets: [String]
}

/// The replication side of the store: the durable per-peer outbox (a cursor into this
/// node's own revisions), digests, and applying revisions received from peers.
extension ConfigStore {
    /// This node's own revisions after `seq`, oldest first: what a peer has not acknowledged.
    public func ownRevisions(after seq: Int64, limit: Int) async throws -> [(seq: Int64, revision: Revision)] {
        let origin = nodeID
        return try await pool.read { db in
            let rows = try Row.fetchAll(db.cachedStatement(sql: """
                SELECT seq, environment, key, category, ciphertext, hlc, origin, deleted, created_at, updated_at, actor
                FROM revisions WHERE origin = ? AND seq > ? ORDER BY seq LIMIT ?
                """), arguments: [origin, seq, limit])
            return rows.map { row in (row["seq"], Revision(row: row)) }
        }
    }

    /// The highest local sequence number of this node's own revisions.
    public func lastOwnSeq() async throws -> Int64 {
        let origin = nodeID
        return try await pool.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM revisions WHERE origin = ?"), arguments: [origin]) ?? 0
        }
    }

    /// Own revisions a peer has not acknowledged yet.
    public func outboxDepth(after seq: Int64) async throws -> Int {
        let origin = nodeID
        return try await pool.read { db in
            try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM revisions WHERE origin = ? AND seq > ?"), arguments: [origin, seq]) ?? 0
        }
    }

    public func peerCursor(_ peer: String) async throws -> Int64 {
        try await pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT acked_seq FROM peer_cursors WHERE peer = ?", arguments: [peer]) ?? 0
        }
    }

    /// Records that `peer` holds this node's revisions up to `seq` (durably).
    public func setPeerCursor(_ peer: String, to seq: Int64) async throws {
        _ = try await commit(audit: nil) { db in
            try db.execute(sql: """
                INSERT INTO peer_cursors(peer, acked_seq) VALUES (?, ?)
                ON CONFLICT(peer) DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)
                """, arguments: [peer, seq])
            return ((), 0)
        }
    }

    public func digest() async throws -> StoreDigest {
        try await pool.read { db in
            var buckets = [[UInt8]](repeating: [UInt8](repeating: 0, count: 32), count: RevisionDigest.bucketCount)
            var total = 0
            for row in try Row.fetchAll(db, sql: "SELECT bucket, hash, count FROM digest_buckets") {
                let b: Int = row["bucket"]
                let h: Data = row["hash"]
                if (0..<RevisionDigest.bucketCount).contains(b) { buckets[b] = [UInt8](h) }
                total += row["count"] as Int
            }
            return StoreDigest(digest: RevisionDigest.root(buckets), revisions: total, buckets: buckets.map(RevisionDigest.hex))
        }
    }

    /// The identities of every revision in a bucket.
    public func revisionIDs(bucket: Int) async throws -> [RevisionID] {
        try await pool.read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT environment, key, hlc, origin FROM revisions WHERE bucket = ?"), arguments: [bucket]).map {
                RevisionID(environment: $0["environment"], key: $0["key"], hlc: $0["hlc"], origin: $0["origin"])
            }
        }
    }

    /// The revisions with these identities (those this node has).
    public func revisions(ids: [RevisionID]) async throws -> [Revision] {
        try await pool.read { db in
            let statement = try db.cachedStatement(sql: """
                SELECT environment, key, category, ciphertext, hlc, origin, deleted, created_at, updated_at, actor
                FROM revisions WHERE environment = ? AND key = ? AND hlc = ? AND origin = ?
                """)
            return try ids.compactMap { id in
                try Row.fetchOne(statement, arguments: [id.environment, id.key, id.hlc, id.origin]).map(Revision.init(row:))
            }
        }
    }

    /// The newest revision of (environment, key), tombstone included (federated reads).
    public func newestRevision(environment: String, key: String) async throws -> Revision? {
        try await pool.read { db in
            try Row.fetchOne(db.cachedStatement(sql: """
                SELECT environment, key, category, ciphertext, hlc, origin, deleted, created_at, updated_at, actor
                FROM revisions WHERE environment = ? AND key = ? ORDER BY hlc DESC, origin DESC LIMIT 1
                """), arguments: [environment, key]).map(Revision.init(row:))
        }
    }

    /// Applies revisions from peers in one transaction; returns how many were new and how
    /// many lost a last-writer-wins comparison against the current entry (conflicts).
    public func apply(batch revisions: [Revision]) async throws -> (applied: Int, conflicts: Int) {
        guard !revisions.isEmpty else { return (0, 0) }
        for r in revisions { clock.observe(r.hlc) }
        let keep = maxVersions
        return try await commit(audit: nil) { db in
            var applied = 0, conflicts = 0, delta = 0
            // A revision pruned here by OSC_MAX_VERSIONS is known too: it is not added back.
            let exists = try db.cachedStatement(sql: """
                SELECT EXISTS(SELECT 1 FROM revisions WHERE environment = ? AND key = ? AND hlc = ? AND origin = ?)
                    OR EXISTS(SELECT 1 FROM pruned_revisions WHERE environment = ? AND key = ? AND hlc = ? AND origin = ?)
                """)
            for r in revisions {
                if try Bool.fetchOne(exists, arguments: [r.environment, r.key, r.hlc, r.origin, r.environment, r.key, r.hlc, r.origin]) ?? false { continue }
                applied += 1
                let current = try Self.currentRow(db, environment: r.environment, key: r.key)
                if let current, !r.supersedes(hlc: current.hlc, origin: current.origin) {
                    try Self.insertRevision(r, db: db)
                    try Self.prune(environment: r.environment, key: r.key, keep: keep, db: db)
                    conflicts += 1
                    continue
                }
                let wasLive = current.map { !$0.deleted } ?? false
                _ = try Self.record(r, replacing: current, keep: keep, db: db)
                delta += (r.deleted ? 0 : 1) - (wasLive ? 1 : 0)
            }
            return ((applied, conflicts), delta)
        }
    }
}

extension Revision {
    /// From a row with the revision columns by name.
    public init(row: Row) {
        self.init(environment: row["environment"], key: row["key"], category: row["category"], ciphertext: row["ciphertext"],
                  hlc: row["hlc"], origin: row["origin"], deleted: row["deleted"], createdAt: row["created_at"],
                  updatedAt: row["updated_at"], actor: row["actor"])
    }
}
