import Foundation
import SecureConfStore

/// Bodies exchanged between nodes. Revisions travel encrypted exactly as stored:
/// ciphertext, hlc, origin, tombstone flag — never a user key or a plaintext value.
public struct ReplicationBatch: Codable, Sendable {
    public var origin: String
    public var revisions: [Revision]
    /// The origin's own revisions it pruned before this peer had them (absent when none).
    public var pruned: [PrunedMarker]?
    public init(origin: String, revisions: [Revision], pruned: [PrunedMarker]? = nil) {
        self.origin = origin
        self.revisions = revisions
        self.pruned = pruned
    }
}

public struct ReplicationAck: Codable, Sendable {
    public var applied: Int
    public var conflicts: Int
    public init(applied: Int, conflicts: Int) {
        self.applied = applied
        self.conflicts = conflicts
    }
}

public struct BucketsRequest: Codable, Sendable {
    public var buckets: [Int]
    public init(buckets: [Int]) { self.buckets = buckets }
}

public struct RevisionIDList: Codable, Sendable {
    public var ids: [RevisionID]
    public init(ids: [RevisionID]) { self.ids = ids }
}

public struct RevisionList: Codable, Sendable {
    public var revisions: [Revision]
    public init(revisions: [Revision]) { self.revisions = revisions }
}

/// What `/cluster/health` answers.
public struct PeerHealthReply: Codable, Sendable {
    public var status: String
    public var node_id: String
    public var salt_fingerprint: String?
    /// The answering node's wall clock, milliseconds since 1970 (clock-skew detection).
    public var time_ms: Int64?

    /// What a node answers to `GET /cluster/health` (a single node too: load balancers and
    /// OpenSecureConf clients ask it).
    public static func now(nodeID: String, saltFingerprint: String) -> PeerHealthReply {
        PeerHealthReply(
            status: "healthy",
            node_id: nodeID,
            salt_fingerprint: saltFingerprint,
            time_ms: Int64(Date().timeIntervalSince1970 * 1000)
        )
    }
}

/// The body of a refused replication batch (422, or 503 when revisions are only stamped
/// too far ahead): nothing of the batch was applied; `rejected` names each refused revision.
public struct ReplicationRefusal: Codable, Sendable, Error {
    public struct Rejected: Codable, Sendable {
        public var index: Int
        public var reason: String
        /// True when the revision is well formed but stamped too far ahead of the receiver's clock.
        public var ahead: Bool
        /// How far ahead, in seconds, when `ahead`.
        public var aheadSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case index, reason, ahead
            case aheadSeconds = "ahead_seconds"
        }
    }
    public var detail: String
    public var rejected: [Rejected]

    public init(detail: String, rejected: [Rejected]) {
        self.detail = detail
        self.rejected = rejected
    }

    /// Only revisions stamped too far ahead: a 503 (the receiver's clock is the judge), else 422.
    public var onlyAhead: Bool { !rejected.isEmpty && rejected.allSatisfy(\.ahead) }
}

/// This node's clock runs ahead of its peers' median by more than the skew allowed:
/// client writes are refused until it is corrected.
public struct ClockAhead: Error, CustomStringConvertible {
    public let seconds: Double
    public let maxSkewSeconds: Double
    public var description: String {
        String(
            format:
                "this node's clock is %.1f s ahead of its peers' median (OSC_CLUSTER_MAX_CLOCK_SKEW is %.0f s); it refuses writes until its clock is corrected (NTP)",
            seconds,
            maxSkewSeconds
        )
    }
}

/// One change of a peer's feed (`GET /cluster/changes`): its local sequence number there,
/// what it did, and the revision (ciphertext only).
public struct ChangeRecord: Codable, Sendable {
    public var seq: Int64
    public var kind: String
    public var revision: Revision
    public init(seq: Int64, kind: String, revision: Revision) {
        self.seq = seq
        self.kind = kind
        self.revision = revision
    }
}

/// A page of a node's own changes after a sequence number: how far it read, and its newest
/// sequence number (where a new reader starts).
public struct ChangePage: Codable, Sendable {
    public var through: Int64
    public var head: Int64
    public var changes: [ChangeRecord]
    public init(through: Int64, head: Int64, changes: [ChangeRecord]) {
        self.through = through
        self.head = head
        self.changes = changes
    }
}

/// Receives the changes of writes taken by federated peers (the change-event hub).
public protocol ChangeRelaying: Sendable {
    func relayed(_ changes: [StoredChange], from peer: String)
}

/// `POST /cluster/collected`: the markers of collected keys after a position, in
/// (environment, key) order.
public struct CollectedRequest: Codable, Sendable {
    public struct Position: Codable, Sendable {
        public var environment: String
        public var key: String
        public init(environment: String, key: String) {
            self.environment = environment
            self.key = key
        }
    }
    public var after: Position?
    public var limit: Int?
    public init(after: Position?, limit: Int?) {
        self.after = after
        self.limit = limit
    }
}

public struct CollectedList: Codable, Sendable {
    public var markers: [CollectedMarker]
    public init(markers: [CollectedMarker]) { self.markers = markers }
}
