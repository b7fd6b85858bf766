import Foundation
import GRDB

/// What anti-entropy compares: the 256 bucket hashes and the total revision count, and the
/// digest and count of the collected keys' markers (`OSC_TOMBSTONE_HORIZON`).
public struct StoreDigest: Sendable, Codable, Equatable {
    public var digest: String
    public var revisions: Int
    public var buckets: [String]
    public var collected: String?
    public var collectedKeys: Int?

    public init(digest: String, revisions: Int, buckets: [String], collected: String? = nil, collectedKeys: Int? = nil) {
        self.digest = digest
        self.revisions = revisions
        self.buckets = buckets
        self.collected = collected
        self.collectedKeys = collectedKeys
    }

    enum CodingKeys: String, CodingKey {
        case digest, revisions, buckets, collected
        case collectedKeys = "collected_keys"
    }
}

/// The replication side of the store: the durable per-peer outbox (a cursor into this
/// node's own revisions), digests, and applying revisions received from peers.
extension ConfigStore {
    /// This node's own revisions after `seq`, oldest first: what a peer has not acknowledged.
    /// At most `limit` revisions and about `maxBytes` of ciphertext; a revision larger than
    /// `maxBytes` travels alone.
    public func ownRevisions(after seq: Int64, limit: Int, maxBytes: Int = .max) async throws -> [(seq: Int64, revision: Revision)] {
        let origin = nodeID
        return try await pool.read { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT seq, \(Self.revisionColumns) FROM revisions WHERE origin = ? AND seq > ? ORDER BY seq LIMIT ?
                        """
                ),
                arguments: [origin, seq, limit]
            ).map { (seq: $0["seq"] as Int64, revision: Revision(row: $0)) }
            return Revision.prefix(rows, maxBytes: maxBytes) { $0.revision }
        }
    }

    public func ownPruned(after seq: Int64, through: Int64, limit: Int) async throws -> [(seq: Int64, marker: PrunedMarker)] {
        let origin = nodeID
        return try await pool.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT seq, environment, key, hlc, origin, deleted FROM pruned_revisions
                        WHERE origin = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?
                        """
                ),
                arguments: [origin, seq, through, limit]
            ).map { row in
                (
                    seq: row["seq"] as Int64,
                    marker: PrunedMarker(
                        environment: row["environment"],
                        key: row["key"],
                        hlc: row["hlc"],
                        origin: row["origin"],
                        deleted: row["deleted"]
                    )
                )
            }
        }
    }

    /// When the oldest of this node's revisions after `seq` was written (microseconds), if any.
    public func oldestOwnRevisionTime(after seq: Int64) async throws -> Int64? {
        let origin = nodeID
        return try await pool.read { db in
            try Int64.fetchOne(
                db.cachedStatement(sql: "SELECT updated_at FROM revisions WHERE origin = ? AND seq > ? ORDER BY seq LIMIT 1"),
                arguments: [origin, seq]
            )
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

    /// Drops a retired peer's cursor (its outbox): nothing is kept for it.
    public func forgetPeer(_ peer: String) async throws {
        _ = try await commit(audit: nil) { db in
            try db.execute(sql: "DELETE FROM peer_cursors WHERE peer = ?", arguments: [peer])
            return ((), 0)
        }
    }

    /// Records that `peer` holds this node's revisions up to `seq` (durably).
    public func setPeerCursor(_ peer: String, to seq: Int64) async throws {
        _ = try await commit(audit: nil) { db in
            try db.execute(
                sql: """
                    INSERT INTO peer_cursors(peer, acked_seq) VALUES (?, ?)
                    ON CONFLICT(peer) DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)
                    """,
                arguments: [peer, seq]
            )
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
            let (collected, collectedKeys) = try Self.collectedDigest(db)
            return StoreDigest(
                digest: RevisionDigest.root(buckets),
                revisions: total,
                buckets: buckets.map(RevisionDigest.hex),
                collected: collected,
                collectedKeys: collectedKeys
            )
        }
    }

    /// The digest recomputed from the stored revisions (checks the incremental one: tests, fuzzing).
    public func recomputedDigest() async throws -> StoreDigest {
        try await pool.read { db in
            var buckets = [[UInt8]](repeating: [UInt8](repeating: 0, count: 32), count: RevisionDigest.bucketCount)
            var total = 0
            let rows = try Row.fetchCursor(db, sql: "SELECT \(Self.revisionColumns) FROM revisions")
            while let row = try rows.next() {
                let r = Revision(row: row)
                let h = RevisionDigest.contentHash(r)
                let b = RevisionDigest.bucket(tenant: r.tenant, environment: r.environment, key: r.key)
                for i in 0..<32 { buckets[b][i] ^= h[i] }
                total += 1
            }
            var collected = [UInt8](repeating: 0, count: 32)
            let markers = try CollectedMarker.fetchCursor(db, sql: "SELECT \(Self.markerColumns) FROM collected_keys")
            var collectedKeys = 0
            while let m = try markers.next() {
                for (i, b) in m.hash.enumerated() { collected[i] ^= b }
                collectedKeys += 1
            }
            return StoreDigest(
                digest: RevisionDigest.root(buckets),
                revisions: total,
                buckets: buckets.map(RevisionDigest.hex),
                collected: RevisionDigest.hex(collected),
                collectedKeys: collectedKeys
            )
        }
    }

    /// The identities (with content hashes) of every revision in a bucket.
    public func revisionIDs(bucket: Int) async throws -> [RevisionID] {
        try await pool.read { db in
            try Row.fetchAll(
                db.cachedStatement(sql: "SELECT environment, key, hlc, origin, content_hash FROM revisions WHERE bucket = ?"),
                arguments: [bucket]
            ).map {
                RevisionID(
                    environment: $0["environment"],
                    key: $0["key"],
                    hlc: $0["hlc"],
                    origin: $0["origin"],
                    hash: RevisionDigest.hex([UInt8](($0["content_hash"] as Data?) ?? Data()))
                )
            }
        }
    }

    /// The revisions with these identities (those this node has; the content hash is not compared).
    public func revisions(ids: [RevisionID]) async throws -> [Revision] {
        try await pool.read { db in
            let statement = try db.cachedStatement(
                sql: """
                    SELECT \(Self.revisionColumns) FROM revisions WHERE environment = ? AND key = ? AND hlc = ? AND origin = ?
                    """
            )
            return try ids.compactMap { id in
                guard id.tenant == Revision.defaultTenant else { return nil }
                return try Row.fetchOne(statement, arguments: [id.environment, id.key, id.hlc, id.origin]).map(Revision.init(row:))
            }
        }
    }

    /// How many revisions are set aside on this node.
    /// Sets aside this node's own revisions stamped after `millis` (wall-clock milliseconds):
    /// what it stamped while its clock ran ahead of the cluster's. Peers refuse them, and once
    /// the clock is corrected they would win over later writes; set aside, they are never
    /// current, never replicated and never brought back (kept in `set_aside_revisions`).
    /// Returns how many.
    public func setAsideOwnRevisions(
        stampedAfterMillis millis: Int64,
        unless held: @escaping @Sendable (Int64) -> Bool = { _ in false }
    ) async throws -> Int {
        let bound = min(max(millis, 0), Int64(1) << 46) << 16 | 0xFFFF
        let origin = nodeID
        return try await commit(audit: nil) { db in
            let ids = try Row.fetchAll(
                db,
                sql: "SELECT seq, environment, key, hlc, origin FROM revisions WHERE origin = ? AND hlc > ?",
                arguments: [origin, bound]
            )
            .filter { !held($0["seq"]) }
            .map {
                RevisionIdentity(tenant: Revision.defaultTenant, environment: $0["environment"], key: $0["key"], hlc: $0["hlc"], origin: $0["origin"])
            }
            guard !ids.isEmpty else { return (0, 0) }
            let delta = try Self.setAside(ids, reason: "stamped while this node's clock ran ahead of the cluster's", db: db)
            return (ids.count, delta)
        }
    }

    public func setAsideCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM set_aside_revisions") ?? 0 }
    }

    /// The newest revision of (environment, key), tombstone included (federated reads).
    public func newestRevision(environment: String, key: String) async throws -> Revision? {
        try await pool.read { db in
            try Row.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT \(Self.revisionColumns)
                        FROM revisions WHERE environment = ? AND key = ? ORDER BY hlc DESC, origin DESC LIMIT 1
                        """
                ),
                arguments: [environment, key]
            ).map(Revision.init(row:))
        }
    }

    public typealias ApplyOutcome = SecureConfStore.ApplyOutcome

    /// Applies revisions from peers in one transaction, by last-writer-wins on (hlc,
    /// origin). The caller validates them first (`RevisionRules`); a stamp beyond the
    /// clock's bound is refused here too and never reaches the clock.
    /// `pruned`: revisions their origin pruned (identities only); one this node does not hold
    /// is remembered as pruned, so it numbers the key's versions as the origin does and never
    /// takes that revision back. One it holds it keeps, to prune by its own rules.
    public func apply(batch revisions: [Revision], pruned: [PrunedMarker] = []) async throws -> ApplyOutcome {
        guard !revisions.isEmpty || !pruned.isEmpty else { return ApplyOutcome() }
        for r in revisions {
            guard r.hlc > 0, clock.observe(r.hlc) else {
                throw StoreError.unavailable("revision stamped outside the clock's bound (hlc \(r.hlc)) refused")
            }
        }
        let keep = maxVersions
        defer { if revisions.contains(where: { $0.purgesThrough != nil }) { eraseLogAfterPurge() } }
        return try await commit(audit: nil) { db in
            var outcome = ApplyOutcome()
            var delta = 0
            // A revision pruned, refused or collected here is known too: it is not added back.
            let known = try db.cachedStatement(
                sql: """
                    SELECT EXISTS(SELECT 1 FROM pruned_revisions WHERE environment = ? AND key = ? AND hlc = ? AND origin = ?)
                        OR EXISTS(SELECT 1 FROM refused_revisions WHERE environment = ? AND key = ? AND hlc = ? AND origin = ?)
                        OR EXISTS(SELECT 1 FROM collected_keys c WHERE c.environment = ? AND c.key = ?
                                  AND (c.hlc > ? OR (c.hlc = ? AND c.origin >= ?)))
                    """
            )
            let stored = try db.cachedStatement(
                sql: """
                    SELECT seq, content_hash, \(Self.revisionColumns) FROM revisions WHERE environment = ? AND key = ? AND hlc = ? AND origin = ?
                    """
            )
            for m in pruned {
                let identity: StatementArguments = [m.environment, m.key, m.hlc, m.origin]
                if try Row.fetchOne(stored, arguments: identity) != nil { continue }
                try db.cachedStatement(sql: "INSERT OR IGNORE INTO pruned_revisions(environment, key, hlc, origin, deleted) VALUES (?, ?, ?, ?, ?)")
                    .execute(arguments: identity + [m.deleted])
            }
            for r in revisions {
                let identity: StatementArguments = [r.environment, r.key, r.hlc, r.origin]
                let collected: StatementArguments = [r.environment, r.key, r.hlc, r.hlc, r.origin]
                if try Bool.fetchOne(known, arguments: identity + identity + collected) ?? false { continue }
                if let row = try Row.fetchOne(stored, arguments: identity) {
                    let ours = [UInt8]((row["content_hash"] as Data?) ?? Data())
                    let theirs = RevisionDigest.contentHash(r)
                    if ours == theirs { continue }
                    // Same identity, other content: every node keeps the lower content hash.
                    outcome.identityConflicts += 1
                    guard theirs.lexicographicallyPrecedes(ours) else { continue }
                    try Self.removeRevision(seq: row["seq"], Revision(row: row), db: db)
                    try Self.insertRevision(r, db: db)
                    try Self.prune(environment: r.environment, key: r.key, keep: keep, db: db)
                    delta += try Self.refreshEntry(environment: r.environment, key: r.key, db: db)
                    continue
                }
                outcome.applied += 1
                let current = try Self.currentRow(db, environment: r.environment, key: r.key)
                if let current, !r.supersedes(hlc: current.hlc, origin: current.origin) {
                    try Self.insertRevision(r, db: db)
                    try Self.prune(environment: r.environment, key: r.key, keep: keep, db: db)
                    outcome.conflicts += 1
                    continue
                }
                let wasLive = current.map { !$0.deleted } ?? false
                _ = try Self.record(r, replacing: current, keep: keep, db: db)
                delta += (r.deleted ? 0 : 1) - (wasLive ? 1 : 0)
            }
            return (outcome, delta)
        }
    }
}

/// What applying a batch of revisions from peers did.
public struct ApplyOutcome: Sendable, Equatable {
    /// Revisions that were new here.
    public var applied = 0
    /// New revisions that lost a last-writer-wins comparison against the current entry.
    public var conflicts = 0
    /// Revisions whose identity was known here with other content (resolved the same
    /// way on every node: the lower content hash stays).
    public var identityConflicts = 0

    public init() {}
}
