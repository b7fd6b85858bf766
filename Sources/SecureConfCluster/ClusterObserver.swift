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
