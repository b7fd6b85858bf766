import Foundation
import Logging
import SecureConfStore
import Testing

@testable import SecureConfCluster

/// Tombstone collection across coordinators: who may collect, how markers spread, and the
/// refill of a node out of touch for longer than the horizon.
@Suite(.serialized, .timeLimit(.minutes(2))) struct CollectionClusterTests {
    static let horizon = Duration.seconds(2)
    static var logger: Logger {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return logger
    }

    func collector(_ cluster: TestCluster, _ id: String) -> TombstoneCollector {
        TombstoneCollector(store: cluster.stores[id]!, horizon: Self.horizon, coordinator: cluster.coordinators[id]!, logger: Self.logger)
    }

    /// Deletes `key` on `node` as the service does; returns the tombstone's local sequence number.
    func delete(_ cluster: TestCluster, _ node: String, _ key: String) async throws -> Int64 {
        try await cluster.stores[node]!.delete(environment: "default", key: key) { _ in true }
        cluster.coordinators[node]!.localWriteCommitted()
        return try await cluster.stores[node]!.lastOwnSeq()
    }

    /// Waits out the horizon with anti-entropy rounds every 300 ms (as a node runs them, well
    /// within a third of the horizon): no node counts as out of touch.
    func passHorizon(_ cluster: TestCluster) async throws {
        let end = ContinuousClock.now + Self.horizon + .milliseconds(200)
        while ContinuousClock.now < end {
            for c in cluster.coordinators.values { await c.antiEntropyRound() }
            try await Task.sleep(for: .milliseconds(300))
        }
        for c in cluster.coordinators.values { await c.antiEntropyRound() }
    }

    func collected(_ cluster: TestCluster, _ node: String, _ key: String) async -> Bool {
        do {
            _ = try await cluster.stores[node]!.history(environment: "default", key: key)
            return false
        } catch {
            return error as? StoreError == .collected(environment: "default", key: key)
        }
    }

    @Test func aCollectedKeyLeavesEveryNodeThroughAntiEntropy() async throws {
        let cluster = try TestCluster(horizon: Self.horizon)
        let ids = ["a:1", "b:1", "c:1"]
        try await cluster.write("a:1", "k")
        try await cluster.write("b:1", "kept")
        let deletedAt = ContinuousClock.now
        let seq = try await delete(cluster, "a:1", "k")
        // Anti-entropy keeps running while the tombstone ships, as on a node: under the load of
        // the suites around it, acknowledgements took longer than the 2 s horizon, the nodes
        // counted themselves out of touch and (rightly) stopped shipping to refill, and the
        // wait never ended.
        let deadline = ContinuousClock.now + .seconds(45)
        while !cluster.coordinators["a:1"]!.everyPeerHolds(seq), ContinuousClock.now < deadline {
            for c in cluster.coordinators.values { await c.antiEntropyRound() }
            try await Task.sleep(for: .milliseconds(300))
        }
        #expect(cluster.coordinators["a:1"]!.everyPeerHolds(seq))
        // Not before the horizon (checked when the peers' acknowledgements came in time to tell).
        if ContinuousClock.now - deletedAt < Self.horizon - .milliseconds(500) {
            #expect(try await collector(cluster, "a:1").round().keys == 0)
        }
        try await passHorizon(cluster)
        #expect(try await collector(cluster, "a:1").round().keys == 1)
        // b and c collect nothing of their own (the tombstone is a's): they take a's marker.
        #expect(try await collector(cluster, "b:1").round().keys == 0)
        for id in ["b:1", "c:1"] { await cluster.coordinators[id]!.antiEntropyRound() }
        for id in ids {
            #expect(await collected(cluster, id, "k"), "\(id)")
            #expect(await cluster.holds(id, "kept"))
        }
        // a pulls from b and c: nothing comes back, and every digest is the same.
        await cluster.coordinators["a:1"]!.antiEntropyRound()
        let digests = try await ids.asyncMap { try await cluster.stores[$0]!.digest() }
        #expect(Set(digests.map(\.digest)).count == 1 && Set(digests.map(\.collected)).count == 1)
        #expect(digests[0].collectedKeys == 1)
        await cluster.stop()
    }

    @Test func aPeerThatLacksTheTombstoneHoldsCollectionBack() async throws {
        let cluster = try TestCluster(horizon: Self.horizon)
        try await cluster.write("a:1", "k")
        #expect(await cluster.eventually { await cluster.holdsAll(["b:1", "c:1"], "k") })
        cluster.network.faults.withLock { _ = $0.down.insert("c:1") }
        let seq = try await delete(cluster, "a:1", "k")
        try await passHorizon(cluster)
        #expect(!cluster.coordinators["a:1"]!.everyPeerHolds(seq))
        #expect(try await collector(cluster, "a:1").round().keys == 0)
        #expect(try await cluster.stores["a:1"]!.history(environment: "default", key: "k")?.versions.count == 2)
        // Back: c receives the tombstone, then a may collect.
        cluster.network.faults.withLock { _ = $0.down.remove("c:1") }
        #expect(await cluster.eventually { cluster.coordinators["a:1"]!.everyPeerHolds(seq) })
        await cluster.coordinators["a:1"]!.antiEntropyRound()
        #expect(try await collector(cluster, "a:1").round().keys == 1)
        await cluster.stop()
    }

    @Test func aMarkerForADeleteYoungerThanTheHorizonIsRefused() async throws {
        // A peer that collects early (a bug, or a node holding the secret that lies) removes nothing here.
        let cluster = try TestCluster(horizon: .seconds(60))
        try await cluster.write("a:1", "k")
        _ = try await delete(cluster, "a:1", "k")
        #expect(await cluster.eventually { (try? await cluster.stores["b:1"]!.history(environment: "default", key: "k"))??.versions.count == 2 })
        let early = try await cluster.stores["a:1"]!.collectableTombstones(deletedBeforeMicros: .max, origin: nil, limit: 10)
        #expect(try await cluster.stores["a:1"]!.collect(early.map(\.marker)).keys == 1)
        await cluster.coordinators["b:1"]!.antiEntropyRound()
        #expect(try await cluster.stores["b:1"]!.history(environment: "default", key: "k")?.versions.count == 2)
        #expect(try await cluster.stores["b:1"]!.digest().collectedKeys == 0)
        await cluster.stop()
    }

    @Test func aNodeOutOfTouchLongerThanTheHorizonRefillsInsteadOfMerging() async throws {
        let cluster = try TestCluster(running: false, horizon: Self.horizon)
        try await cluster.write("a:1", "everyone")
        let old = cluster.coordinators["c:1"]!
        // c holds a value nobody else has, and its last round was long ago.
        try await cluster.write("c:1", "only-on-stale-c")
        let longAgo = ClusterCoordinator.nowMicros() - 60_000_000
        try cluster.stores["c:1"]!.setMetadata(ClusterCoordinator.lastContactMetadata, String(longAgo))
        // Made on that store (as at a restart), c's coordinator serves no data (the HTTP gate asks
        // it) before it runs; it takes the old one's place.
        let c = ClusterCoordinator(
            settings: old.settings,
            store: cluster.stores["c:1"]!,
            transport: cluster.network.link(from: "c:1", saltFingerprint: "cluster-salt"),
            saltFingerprint: "cluster-salt",
            logger: Self.logger,
            observer: nil
        )
        #expect(c.isRefilling && !old.isRefilling)
        cluster.coordinators["c:1"] = c
        cluster.network.endpoints.withLock { $0["c:1"] = PeerEndpoints(coordinator: c) }
        for coordinator in ["a:1", "b:1", "c:1"].map({ cluster.coordinators[$0]! }) {
            cluster.tasks.append(Task { try await coordinator.run() })
        }
        #expect(await cluster.eventually { c.collectionStatus.rejoinedAt != nil })
        #expect(await cluster.eventually { await cluster.holds("c:1", "everyone") }, "refilled from its peers")
        #expect(await !cluster.holds("c:1", "only-on-stale-c"), "its stale history is set aside, not merged")
        #expect(try await cluster.stores["c:1"]!.setAsideCount() == 1)
        #expect(await cluster.holdsNone(["a:1", "b:1"], "only-on-stale-c"))
        #expect(!c.needsRejoin)
        #expect(await cluster.eventually { !c.isRefilling }, "serves again once it has pulled from a peer")
        await cluster.stop()
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await transform(e)) }
        return out
    }
}
