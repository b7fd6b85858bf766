import Testing

@testable import SecureConfCluster

@Suite struct QuorumTests {
    @Test func quorumSizes() {
        #expect(ClusterSettings.WriteQuorum.one.required(clusterSize: 3) == 1)
        #expect(ClusterSettings.WriteQuorum.majority.required(clusterSize: 3) == 2)
        #expect(ClusterSettings.WriteQuorum.majority.required(clusterSize: 4) == 3)
        #expect(ClusterSettings.WriteQuorum.all.required(clusterSize: 3) == 3)
        let s = ClusterSettings(nodeID: "b:1", peers: ["a:1", "b:1", "c:1"], mode: .replica, apiKey: "k")
        #expect(s.peers == ["a:1", "c:1"], "a node's own id in the peer list is ignored")
        #expect(s.allNodes == ["a:1", "b:1", "c:1"])
    }
}
