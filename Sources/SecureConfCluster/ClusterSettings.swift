import Foundation

/// How a node takes part in a cluster, validated by the server's configuration parser.
public struct ClusterSettings: Sendable {
    public enum Mode: String, Sendable { case replica, federated }
    public enum WriteQuorum: Sendable, Equatable {
        case one, majority, all
        /// Nodes (this one included) that must hold a write before it is acknowledged.
        public func required(clusterSize: Int) -> Int {
            switch self {
            case .one: 1
            case .majority: clusterSize / 2 + 1
            case .all: clusterSize
            }
        }
    }

    public var nodeID: String
    /// Peers as host:port (this node excluded).
    public var peers: [String]
    public var mode: Mode
    public var apiKey: String
    public var syncInterval: Duration
    public var healthInterval: Duration
    public var peerTimeout: Duration
    public var writeQuorum: WriteQuorum
    /// How long a node without a salt waits for one to appear in the cluster.
    public var saltWait: Duration
    /// Scheme for peer URLs ("http" or "https").
    public var scheme: String
    /// PEM CA bundle for verifying https peers (nil: the system store).
    public var caFile: String?

    public init(nodeID: String, peers: [String], mode: Mode, apiKey: String, syncInterval: Duration = .seconds(30),
                healthInterval: Duration = .seconds(5), peerTimeout: Duration = .seconds(5), writeQuorum: WriteQuorum = .one,
                saltWait: Duration = .seconds(120), scheme: String = "http", caFile: String? = nil) {
        self.nodeID = nodeID
        self.peers = peers.filter { $0 != nodeID }
        self.mode = mode
        self.apiKey = apiKey
        self.syncInterval = syncInterval
        self.healthInterval = healthInterval
        self.peerTimeout = peerTimeout
        self.writeQuorum = writeQuorum
        self.saltWait = saltWait
        self.scheme = scheme
        self.caFile = caFile
    }

    /// Every node of the cluster, this one included, sorted.
    public var allNodes: [String] { Array(Set(peers + [nodeID])).sorted() }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
