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
    /// The peer credential (`OSC_CLUSTER_SECRET`); nil: peers authenticate with the clients'
    /// API key (OpenSecureConf compatibility, reported as insecure).
    public var credential: PeerCredential?
    /// With a credential: also accept unsigned peers holding the API key, and unsigned
    /// replies (the window of a rolling upgrade to the credential).
    public var acceptAPIKeyPeers = false
    /// How far a node's clock may run ahead of its peers' median, and a revision's stamp
    /// ahead of the receiver's clock (`OSC_CLUSTER_MAX_CLOCK_SKEW`).
    public var maxClockSkew: Duration = .seconds(5)
    /// Largest replication batch, in bytes of revisions (a larger revision travels alone).
    public var maxBatchBytes = 8 * 1024 * 1024
    /// Largest ciphertext accepted from a peer.
    public var maxCiphertextBytes = 16 * 1024 * 1024
    /// How long a tombstone is kept before its key's history is collected
    /// (`OSC_TOMBSTONE_HORIZON`; nil: never). A node away longer than this refills from its peers.
    public var tombstoneHorizon: Duration?

    /// The window in which a signed message's time must fall (replay protection).
    public var replayWindow: Duration { .seconds(30) + maxClockSkew }

    /// Whether peers authenticate with something clients do not hold.
    public var peersAuthenticated: Bool { credential != nil && !acceptAPIKeyPeers }

    public var maxClockSkewMillis: Int64 { Int64(maxClockSkew.seconds * 1000) }

    public init(
        nodeID: String,
        peers: [String],
        mode: Mode,
        apiKey: String,
        syncInterval: Duration = .seconds(30),
        healthInterval: Duration = .seconds(5),
        peerTimeout: Duration = .seconds(5),
        writeQuorum: WriteQuorum = .one,
        saltWait: Duration = .seconds(120),
        scheme: String = "http",
        caFile: String? = nil
    ) {
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
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
