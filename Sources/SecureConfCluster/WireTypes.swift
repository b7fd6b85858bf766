import SecureConfStore

/// Bodies exchanged between nodes. Revisions travel encrypted exactly as stored:
/// ciphertext, hlc, origin, tombstone flag — never a user key or a plaintext value.
public struct ReplicationBatch: Codable, Sendable {
    public var origin: String
    public var revisions: [Revision]
    public init(origin: String, revisions: [Revision]) {
        self.origin = origin
        self.revisions = revisions
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
}
