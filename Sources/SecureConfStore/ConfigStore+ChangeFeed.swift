import Foundation
import GRDB

/// What a committed revision did to its entry, as change events name it.
public enum ChangeKind: String, Sendable, Equatable {
    case created, updated, deleted
}

/// One revision of the local history, in the order this node committed it.
public struct StoredChange: Sendable, Equatable {
    /// This node's local sequence number of the revision (its commit order here).
    public var seq: Int64
    public var kind: ChangeKind
    public var revision: Revision

    public init(seq: Int64, kind: ChangeKind, revision: Revision) {
        self.seq = seq
        self.kind = kind
        self.revision = revision
    }
}

/// One page of the change feed: the changes after a sequence number, and how far it read
/// (revisions that changed nothing, like one that lost a last-writer-wins comparison on
/// arrival, are read past and not returned).
public struct ChangeFeedPage: Sendable, Equatable {
    public var changes: [StoredChange]
    public var through: Int64

    public init(changes: [StoredChange], through: Int64) {
        self.changes = changes
        self.through = through
    }
}

/// The change feed: every revision this node committed (its own writes and those it
/// received from peers), in local commit order, from the revision history itself.
public protocol ChangeFeedStorage: Sendable {
    /// Changes after `seq`, oldest first, reading at most `limit` revisions.
    func changes(after seq: Int64, limit: Int) async throws -> ChangeFeedPage
    /// The newest local sequence number (0 on an empty store).
    func lastChangeSeq() async throws -> Int64
    /// The highest sequence number whose revision left the history (`OSC_MAX_VERSIONS`, a
    /// collected tombstone): a
    /// reader resuming at or below it may have missed changes.
    func changeFeedHorizon() async throws -> Int64
    /// Signalled after every commit; the change feed's one reader waits on it.
    var commits: WakeSignal { get }
}

extension ConfigStore: ChangeFeedStorage {
    public func changes(after seq: Int64, limit: Int) async throws -> ChangeFeedPage {
        try await pool.read { db in
            // Each revision with what was current just before it arrived here: an earlier
            // arrival that beats it means it changed nothing; otherwise the newest earlier
            // arrival (kept or pruned) says whether it created or updated.
            let rows = try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT r.seq, \(Revision.Columns.allCases.map { "r." + $0.rawValue }.joined(separator: ", ")),
                          EXISTS(SELECT 1 FROM revisions p WHERE p.environment = r.environment AND p.key = r.key AND p.seq < r.seq
                                 AND (p.hlc > r.hlc OR (p.hlc = r.hlc AND p.origin > r.origin))) AS beaten,
                          (SELECT p.deleted FROM revisions p WHERE p.environment = r.environment AND p.key = r.key AND p.seq < r.seq
                                 ORDER BY p.hlc DESC, p.origin DESC LIMIT 1) AS before_deleted,
                          (SELECT q.deleted FROM pruned_revisions q WHERE q.environment = r.environment AND q.key = r.key
                                 AND (q.hlc < r.hlc OR (q.hlc = r.hlc AND q.origin < r.origin))
                                 ORDER BY q.hlc DESC, q.origin DESC LIMIT 1) AS pruned_before_deleted
                        FROM revisions r WHERE r.seq > ? ORDER BY r.seq LIMIT ?
                        """
                ),
                arguments: [seq, max(1, limit)]
            )
            var changes: [StoredChange] = []
            var through = seq
            for row in rows {
                let localSeq: Int64 = row["seq"]
                through = localSeq
                if row["beaten"] as Bool { continue }
                let before: Bool? = row["before_deleted"] ?? row["pruned_before_deleted"]
                if let change = StoredChange.classify(seq: localSeq, Revision(row: row), deletedBefore: before) { changes.append(change) }
            }
            return ChangeFeedPage(changes: changes, through: through)
        }
    }

    public func lastChangeSeq() async throws -> Int64 {
        try await pool.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT seq FROM sqlite_sequence WHERE name = 'revisions'")) ?? 0
        }
    }

    public func changeFeedHorizon() async throws -> Int64 {
        try await pool.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM counters WHERE name = 'pruned_through_seq'")) ?? 0
        }
    }
}
