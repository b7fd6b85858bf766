import Foundation
import Logging
import SecureConfCrypto
import SecureConfStore
import ServiceLifecycle
import Synchronization
import Testing

@testable import SecureConfCluster

/// Nodes in one process: each node's transport calls the other nodes' `PeerEndpoints`
/// through JSON, as HTTP would, with faults a test turns on and off.
final class InProcessNetwork: Sendable {
    struct Faults {
        /// Nodes that do not answer at all.
        var down: Set<String> = []
        /// Replicate requests a node still takes before failing every further one.
        var replicatesBeforeFailing: [String: Int] = [:]
    }

    let endpoints = Mutex<[String: PeerEndpoints]>([:])
    let faults = Mutex(Faults())
    let replicateCalls = Mutex<[String: Int]>([:])

    func link(from sender: String, saltFingerprint: String) -> Link { Link(network: self, sender: sender, saltFingerprint: saltFingerprint) }

    struct Link: PeerTransporting {
        let network: InProcessNetwork
        let sender: String
        let saltFingerprint: String

        func request(_ peer: String, _ method: String, _ path: String, body: Data?, contentType: String) async throws -> PeerReply {
            let (down, budget) = network.faults.withLock { ($0.down.contains(peer) || $0.down.contains(sender), $0.replicatesBeforeFailing[peer]) }
            guard !down, let node = network.endpoints.withLock({ $0[peer] }) else {
                throw PeerError(peer: peer, status: nil, reason: "Couldn't connect to server")
            }
            func reply(_ value: some Encodable, status: Int = 200) throws -> PeerReply {
                PeerReply(status: status, body: try JSONEncoder().encode(value))
            }
            func decoded<T: Decodable>(_ type: T.Type) throws -> T { try JSONDecoder().decode(T.self, from: body ?? Data()) }
            do {
                switch (method, path.split(separator: "?").first.map(String.init) ?? path) {
                case ("GET", "/cluster/health"):
                    return try reply(PeerHealthReply.now(nodeID: peer, saltFingerprint: node.coordinator.saltFingerprint))
                case ("POST", "/cluster/replicate"):
                    let calls = network.replicateCalls.withLock {
                        $0[peer, default: 0] += 1; return $0[peer]!
                    }
                    if let budget, calls > budget { return try reply(["detail": "storage failure"], status: 503) }
                    do {
                        return try reply(
                            try await node.replicate(try decoded(ReplicationBatch.self), sender: sender, senderSaltFingerprint: saltFingerprint)
                        )
                    } catch let refusal as ReplicationRefusal {
                        return try reply(refusal, status: refusal.onlyAhead ? 503 : 422)
                    }
                case ("GET", "/cluster/digest"): return try reply(try await node.digest())
                case ("POST", "/cluster/buckets"): return try reply(try await node.buckets(try decoded(BucketsRequest.self)))
                case ("POST", "/cluster/fetch"): return try reply(try await node.fetch(try decoded(RevisionIDList.self)))
                case ("POST", "/cluster/collected"): return try reply(try await node.collected(try decoded(CollectedRequest.self)))
                case ("GET", "/cluster/changes"):
                    let query = Dictionary(
                        uniqueKeysWithValues: (path.split(separator: "?").dropFirst().first ?? "").split(separator: "&").map {
                            let pair = $0.split(separator: "=", maxSplits: 1)
                            return (String(pair[0]), Int64(pair[1]) ?? 0)
                        }
                    )
                    return try reply(try await node.changes(after: query["after"] ?? 0, limit: Int(query["limit"] ?? 0)))
                default: return try reply(["detail": "Not Found"], status: 404)
                }
            } catch let e as PeerInputError {
                return try reply(["detail": e.description], status: e.kind == .foreignSalt ? 409 : 400)
            }
        }
    }
}

/// A cluster of coordinators over real SQLite stores in a temporary directory.
final class TestCluster {
    let directory = NSTemporaryDirectory() + "coordinator-" + UUID().uuidString
    let network = InProcessNetwork()
    var coordinators: [String: ClusterCoordinator] = [:]
    var stores: [String: ConfigStore] = [:]
    var tasks: [Task<Void, any Error>] = []
    static let key: DerivedKey = {
        var bytes = OpenSSL.randomBytes(32); return DerivedKey(consuming: &bytes)
    }()

    init(
        _ ids: [String] = ["a:1", "b:1", "c:1"],
        quorum: ClusterSettings.WriteQuorum = .one,
        peerTimeout: Duration = .milliseconds(800),
        salts: [String: String] = [:],
        running: Bool = true,
        mode: ClusterSettings.Mode = .replica,
        relays: [String: any ChangeRelaying] = [:],
        horizon: Duration? = nil
    ) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        for id in ids {
            let store = try ConfigStore(configuration: .init(path: "\(directory)/\(id).db", nodeID: id))
            var settings = ClusterSettings(
                nodeID: id,
                peers: ids,
                mode: mode,
                apiKey: "unused",
                syncInterval: .seconds(3600),
                healthInterval: .milliseconds(100),
                peerTimeout: peerTimeout,
                writeQuorum: quorum
            )
            settings.tombstoneHorizon = horizon
            let salt = salts[id] ?? "cluster-salt"
            let coordinator = ClusterCoordinator(
                settings: settings,
                store: store,
                transport: network.link(from: id, saltFingerprint: salt),
                saltFingerprint: salt,
                logger: logger,
                observer: nil,
                changeRelay: relays[id]
            )
            stores[id] = store
            coordinators[id] = coordinator
            network.endpoints.withLock { $0[id] = PeerEndpoints(coordinator: coordinator) }
        }
        if running { for c in coordinators.values { tasks.append(Task { try await c.run() }) } }
    }

    /// A client write on `node`, as the service makes it: commit, then wake the shippers.
    @discardableResult
    func write(_ node: String, _ key: String) async throws -> Int64 {
        // A real Fernet token: peers check the shape and time of what they receive.
        let token = Fernet.encrypt(Array("\"value of \(key)\"".utf8), key: Self.key)
        _ = try await stores[node]!.create(environment: "default", key: key, category: nil, ciphertext: token)
        coordinators[node]!.localWriteCommitted()
        return try await stores[node]!.lastOwnSeq()
    }

    func holds(_ node: String, _ key: String) async -> Bool { (try? await stores[node]!.entry(environment: "default", key: key)) != nil }

    func holdsAll(_ nodes: [String], _ key: String) async -> Bool {
        for node in nodes where !(await holds(node, key)) { return false }
        return true
    }

    func holdsNone(_ nodes: [String], _ key: String) async -> Bool {
        for node in nodes where await holds(node, key) { return false }
        return true
    }

    func eventually(_ timeout: Duration = .seconds(10), _ condition: () async -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return await condition()
    }

    func stop() async {
        for task in tasks { task.cancel() }
        for task in tasks { _ = try? await task.value }
        for store in stores.values { await store.close() }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct CoordinatorTests {
    @Test func aLocalWriteIsShippedToEveryPeer() async throws {
        let cluster = try TestCluster()
        let seq = try await cluster.write("a:1", "shipped")
        #expect(await cluster.eventually { await cluster.holdsAll(["b:1", "c:1"], "shipped") })
        #expect(await cluster.eventually { cluster.coordinators["a:1"]!.peerStatuses.allSatisfy { $0.ackedSeq >= seq } })
        await cluster.stop()
    }

    @Test func theQuorumIsReachedOnlyWhenEnoughPeersHoldTheWrite() async throws {
        // A generous timeout: reaching the quorum must not depend on how busy the machine is.
        let cluster = try TestCluster(quorum: .all, peerTimeout: .seconds(5))
        let a = cluster.coordinators["a:1"]!
        let seq = try await cluster.write("a:1", "everyone")
        try await a.awaitQuorum(seq: seq)
        #expect(await cluster.holdsAll(["b:1", "c:1"], "everyone"), "held by every peer when the quorum is reached")

        cluster.network.faults.withLock { _ = $0.down.insert("c:1") }
        let missed = try await cluster.write("a:1", "c-is-down")
        await #expect(throws: QuorumNotReached.self) { try await a.awaitQuorum(seq: missed) }
        #expect(await cluster.holds("b:1", "c-is-down"), "the reachable peer has it")
        #expect(await !cluster.holds("c:1", "c-is-down"))
        // Back up: the write that missed its quorum still reaches c (nothing committed is dropped).
        cluster.network.faults.withLock { _ = $0.down.remove("c:1") }
        #expect(await cluster.eventually { await cluster.holds("c:1", "c-is-down") })
        await cluster.stop()
    }

    @Test func antiEntropyRepairsWhatShippingNeverDelivered() async throws {
        // Not running: nothing is shipped; only explicit health checks and anti-entropy rounds.
        let cluster = try TestCluster(running: false)
        for i in 0..<25 { try await cluster.write("a:1", "only-on-a-\(i)") }
        try await cluster.write("c:1", "only-on-c")
        let b = cluster.coordinators["b:1"]!
        await b.checkHealth()
        #expect(!(await cluster.holds("b:1", "only-on-a-0")))
        await b.antiEntropyRound()
        for i in 0..<25 { #expect(await cluster.holds("b:1", "only-on-a-\(i)")) }
        #expect(await cluster.holds("b:1", "only-on-c"))
        let digests = try await [cluster.stores["a:1"]!.digest(), cluster.stores["b:1"]!.digest()]
        #expect(digests[0].revisions < digests[1].revisions, "b holds a's revisions and c's")
        await cluster.stop()
    }

    @Test func aPeerFailingMidwayLosesNothing() async throws {
        let cluster = try TestCluster()
        try await cluster.write("a:1", "before")
        #expect(await cluster.eventually { await cluster.holds("b:1", "before") })
        // b takes no further replicate requests: the batches after fail with 503.
        let taken = cluster.network.replicateCalls.withLock { $0["b:1", default: 0] }
        cluster.network.faults.withLock { $0.replicatesBeforeFailing["b:1"] = taken }
        for i in 0..<20 { try await cluster.write("a:1", "during-\(i)") }
        #expect(await cluster.eventually { await cluster.holds("c:1", "during-19") }, "a healthy peer is not held back")
        #expect(
            await cluster.eventually {
                cluster.coordinators["a:1"]!.peerStatuses.first { $0.nodeID == "b:1" }?.replicationError != nil
            },
            "the failing peer's error is reported"
        )
        #expect(await !cluster.holds("b:1", "during-0"))
        cluster.network.faults.withLock { $0.replicatesBeforeFailing["b:1"] = nil }
        #expect(
            await cluster.eventually(.seconds(15)) {
                for i in 0..<20 where !(await cluster.holds("b:1", "during-\(i)")) { return false }
                return true
            },
            "every write reaches b once it takes requests again"
        )
        await cluster.stop()
    }

    @Test func aNodeWithAForeignSaltShipsNothingAndIsRefused() async throws {
        let cluster = try TestCluster(salts: ["c:1": "another-salt"])
        let c = cluster.coordinators["c:1"]!
        #expect(await cluster.eventually { c.saltIsConsistent.consistent == false }, "c sees that its salt is not the cluster's")
        try await cluster.write("c:1", "foreign")
        try await Task.sleep(for: .milliseconds(500))
        #expect(await cluster.holdsNone(["a:1", "b:1"], "foreign"))
        // Even a batch c sends anyway is refused by the receiver.
        let batch = ReplicationBatch(
            origin: "c:1",
            revisions: try await cluster.stores["c:1"]!.ownRevisions(after: 0, limit: 10, maxBytes: 1 << 20).map(\.revision)
        )
        await #expect(throws: PeerError.self) {
            _ = try await cluster.network.link(from: "c:1", saltFingerprint: "another-salt").json(
                "a:1",
                "POST",
                "/cluster/replicate",
                body: batch,
                as: ReplicationAck.self
            )
        }
        #expect(await !cluster.holds("a:1", "foreign"))
        // a and b keep replicating between themselves.
        try await cluster.write("a:1", "native")
        #expect(await cluster.eventually { await cluster.holds("b:1", "native") })
        #expect(await !cluster.holds("c:1", "native"), "nothing is shipped to a node under a foreign salt")
        await cluster.stop()
    }
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct MembershipTests {
    /// A reload retires a peer (nothing more is shipped to it, it leaves the statuses) and adds
    /// it back (shipped from the start of this node's history, whatever cursor it had); a
    /// reload naming no peer is refused.
    @Test func peersAreRetiredAndAddedWithoutARestart() async throws {
        let cluster = try TestCluster()
        let a = cluster.coordinators["a:1"]!
        try await cluster.write("a:1", "before")
        #expect(await cluster.eventually { await cluster.holdsAll(["b:1", "c:1"], "before") })

        let none = await a.setPeers([])
        #expect(none.added.isEmpty && none.removed.isEmpty)
        #expect(a.currentPeers == ["b:1", "c:1"], "a list naming no peer changes nothing")

        let retired = await a.setPeers(["a:1", "b:1"])
        #expect(retired.removed == ["c:1"] && retired.added.isEmpty)
        #expect(a.peerStatuses.map(\.nodeID) == ["b:1"])
        #expect(try await cluster.stores["a:1"]!.peerCursor("c:1") == 0, "its outbox cursor is dropped")
        // (c may still pull from a in its own anti-entropy round: c did not retire a. What a
        // stops is shipping: only a writes here, so every replicate request c takes is a's.)
        let shippedToC = cluster.network.replicateCalls.withLock { $0["c:1", default: 0] }
        try await cluster.write("a:1", "while-retired")
        #expect(await cluster.eventually { await cluster.holds("b:1", "while-retired") })
        try await Task.sleep(for: .milliseconds(300))
        #expect(cluster.network.replicateCalls.withLock { $0["c:1", default: 0] } == shippedToC, "nothing is shipped to a retired peer")

        let back = await a.setPeers(["b:1", "c:1"])
        #expect(back.added == ["c:1"])
        #expect(await cluster.eventually { cluster.network.replicateCalls.withLock { $0["c:1", default: 0] } > shippedToC })
        #expect(await cluster.eventually { await cluster.holds("c:1", "while-retired") })
        #expect(a.peerStatuses.map(\.nodeID) == ["b:1", "c:1"])
        await cluster.stop()
    }
}

@Suite struct ShutdownTests {
    /// `beginShutdown()` (SIGTERM, before the HTTP server drains) ends the loops, but the
    /// service returns only at the group's own graceful shutdown: a service that returned
    /// earlier made the group cancel the HTTP server instead of draining it (a node crashed in
    /// NIO's channel setup during one such cancellation).
    @Test func theServiceOutlivesBeginShutdownUntilTheGroupShutsDown() async throws {
        let cluster = try TestCluster(running: false)
        let coordinator = cluster.coordinators["a:1"]!
        let group = ServiceGroup(configuration: .init(services: [.init(service: coordinator)], logger: Logger(label: "test")))
        let returned = Acknowledged()
        let run = Task {
            defer { returned.set(1) }
            try await group.run()
        }
        try await Task.sleep(for: .milliseconds(200))
        coordinator.beginShutdown()
        try await Task.sleep(for: .milliseconds(500))
        #expect(returned.value == 0, "the service returned before the group's shutdown")
        await group.triggerGracefulShutdown()
        try await run.value
        #expect(returned.value == 1)
        await cluster.stop()
    }
}

@Suite struct QuorumWaiterTests {
    /// A write waiting for its quorum resumes as soon as an acknowledgement meets it (no
    /// polling interval), and at its deadline when none does; no waiter is left behind.
    @Test func waitersResumeOnTheAcknowledgementThatMeetsThemOrAtTheirDeadline() async throws {
        let waiters = DeadlineWaiters()
        let acked = Acknowledged()
        let started = ContinuousClock.now
        // Deadlines far beyond the bound checked below: only an acknowledgement can end these.
        async let first = waiters.wait(until: .now + .seconds(120)) { acked.value >= 1 }
        async let second = waiters.wait(until: .now + .seconds(120)) { acked.value >= 2 }
        async let never = waiters.wait(until: .now + .milliseconds(200)) { acked.value >= 99 }
        try await Task.sleep(for: .milliseconds(50))
        acked.set(1)
        waiters.check()
        #expect(await first)
        acked.set(2)
        waiters.check()
        #expect(await second)
        #expect(ContinuousClock.now - started < .seconds(60), "resumed by the acknowledgement, not the deadline")
        #expect(await never == false)
        // Already met before waiting, and a deadline already past.
        #expect(await waiters.wait(until: .now + .seconds(120)) { true })
        #expect(await waiters.wait(until: .now - .seconds(1)) { false } == false)
    }

    /// Shutdown: `stop()` ends every wait at once with whether its condition holds then, and
    /// every later wait returns at once; a cancelled waiter ends at once too. (Without them a
    /// SIGTERM waited out quorum deadlines and the loops' sync intervals.)
    @Test func stopAndCancellationEndWaitsAtOnce() async throws {
        let waiters = DeadlineWaiters()
        let started = ContinuousClock.now
        let cancelled = Task { await waiters.wait(until: .now + .seconds(120)) { false } }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        #expect(await cancelled.value == false)
        let acked = Acknowledged()
        async let unmet = waiters.wait(until: .now + .seconds(120)) { false }
        async let met = waiters.wait(until: .now + .seconds(120)) { acked.value == 1 }
        try await Task.sleep(for: .milliseconds(50))
        acked.set(1)
        waiters.stop()
        #expect(await unmet == false)
        #expect(await met, "a waiter whose condition holds when stopped says so")
        #expect(await waiters.wait(until: .now + .seconds(120)) { false } == false)
        #expect(ContinuousClock.now - started < .seconds(60), "ended by stop and cancellation, not by a deadline")
    }
}

final class Acknowledged: Sendable {
    private let state = Mutex(0)
    var value: Int { state.withLock { $0 } }
    func set(_ n: Int) { state.withLock { $0 = n } }
}
