/// Receives the cluster's events (the server turns them into Prometheus metrics).
public protocol ClusterObserver: Sendable {
    func membershipChanged(total: Int, healthy: Int)
    func revisionsSent(peer: String, count: Int)
    func revisionsReceived(peer: String, count: Int)
    func outboxDepth(peer: String, depth: Int)
    func conflictsResolved(_ count: Int)
    func antiEntropyRepaired(peer: String, count: Int)
    func syncFinished(seconds: Double)
}

/// Events added with peer validation; no-ops unless an observer counts them.
public protocol ClusterSafetyObserver: Sendable {
    /// Revisions a peer sent that this node refused (`reason`: invalid, ahead, origin).
    func revisionsRefused(peer: String, reason: String, count: Int)
    /// This node's own revisions set aside because a peer refused them as stamped too far ahead.
    func revisionsSetAside(count: Int)
    /// Revisions whose identity was known with other content (resolved by content hash).
    func identityConflicts(_ count: Int)
    /// This node's clock against the median of its healthy peers (positive: ahead).
    func clockOffset(seconds: Double, ahead: Bool)
    /// A replication batch that a peer did not accept.
    func replicationFailed(peer: String)
}
