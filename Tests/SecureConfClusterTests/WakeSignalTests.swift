import Testing

@testable import SecureConfCluster

@Suite struct WakeSignalTests {
    @Test func aSignalWakesOneWaitAndLeavesNothingBehind() async throws {
        let signal = WakeSignal()
        signal.signal()
        let clock = ContinuousClock()
        let first = await clock.measure { await signal.wait(timeout: .seconds(5)) }
        #expect(first < .seconds(1), "a remembered signal wakes the next wait at once")
        // The timer of the first wait was cancelled; it must not leave a stale wake-up.
        try await Task.sleep(for: .milliseconds(50))
        let second = await clock.measure { await signal.wait(timeout: .milliseconds(300)) }
        #expect(second >= .milliseconds(250), "with no signal, a wait lasts its timeout (was \(second))")
    }

    @Test func aWaitingLoopIsWokenBySignal() async throws {
        let signal = WakeSignal()
        let clock = ContinuousClock()
        async let waited = clock.measure { await signal.wait(timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(100))
        signal.signal()
        #expect(try await waited < .seconds(5))
    }

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
