import Foundation
import Logging
import SecureConfStore
import ServiceLifecycle
import Synchronization

/// What this node knows of one peer.
public struct PeerStatus: Sendable {
    public var nodeID: String
    public var healthy = false
    public var lastSeen: Date?
    public var lastError: String?
    public var saltFingerprint: String?
    /// This node's own revisions the peer has acknowledged, up to this local sequence number.
    public var ackedSeq: Int64 = 0
    public var outboxDepth = 0
    public var lastSync: Date?
    /// Why the last replication batch to this peer failed (kept until one succeeds; the
    /// health loop does not clear it).
    public var replicationError: String?
    public var replicationErrorAt: Date?
    /// The peer's clock minus ours, milliseconds, from the last health probe.
    public var clockOffsetMillis: Int64?
    /// This node's revisions the peer refused for good (not sent to it again).
    public var refusedByPeer = 0
    /// Local sequence numbers the peer refused (the most recent ones): below `ackedSeq` but
    /// not held by the peer, so they never count towards a write quorum.
    var refusedSeqs = Set<Int64>()

    /// Whether the peer holds this node's revision `seq`.
    func holds(_ seq: Int64) -> Bool { ackedSeq >= seq && !refusedSeqs.contains(seq) }
}

/// Quorum was not reached in time; the write is committed here and will still replicate.
public struct QuorumNotReached: Error, CustomStringConvertible {
    public let required: Int
    public let reached: Int
    public var description: String {
        "write committed on \(reached) of the \(required) nodes required before the timeout; it will reach the others when they are back"
    }
}

/// The cluster's background work, each loop with one owner: health checks, the per-peer
/// replication shippers (the durable outbox is a cursor into this node's own revisions),
/// and anti-entropy. Runs as a service and stops on graceful shutdown.
public final class ClusterCoordinator: Service, Sendable {
    public let settings: ClusterSettings
    public let store: any ReplicatedStorage
    public let transport: any PeerTransporting
    public let saltFingerprint: String
    let logger: Logger
    private let observer: (any ClusterObserver)?
    private let peers: Mutex<[String: PeerStatus]>
    /// Until the first health round has compared salts with the peers, the node does not serve data.
    private let saltConsistency = Mutex<(consistent: Bool, reason: String?)>(
        (false, "this node has not yet compared its salt with the cluster's nodes; retry in a moment")
    )
    /// Each peer's shipper wake-up; peers come and go with `setPeers` (SIGHUP).
    private let wakeups: Mutex<[String: WakeSignal]>
    /// The current peers, each with the generation of its loops (a peer removed and added
    /// again gets new loops; the old ones see a different generation and end).
    private let membership: Mutex<(peers: [String], generation: [String: Int], next: Int, started: Set<Int>)>
    /// Peers added while running, for `run()` to start their loops.
    private let added: AsyncStream<String>
    private let addedContinuation: AsyncStream<String>.Continuation
    /// Writes waiting for their quorum, woken when a peer acknowledges more (`check()`).
    private let quorumWaiters = DeadlineWaiters()
    /// The loops' sleeps between rounds, all ended at once when shutdown begins.
    private let sleepers = DeadlineWaiters()
    /// Set when shutdown begins (`beginShutdown()`), before the HTTP server drains.
    private let shuttingDown = Atomic<Bool>(false)
    private let lastSyncTime = Mutex<Date?>(nil)
    /// This node's clock against the median of its healthy peers: (offset ms, positive when
    /// ahead; whether that is beyond the skew allowed).
    private let clockState = Mutex<(offsetMillis: Int64?, ahead: Bool)>((nil, false))
    /// Health rounds left in which to sweep future-stamped own revisions aside.
    private let clockSweeps = Mutex(0)
    public let rules: RevisionRules
    /// Where the changes of federated peers go (their writes are not replicated here).
    let changeRelay: (any ChangeRelaying)?
    /// How far each federated peer's change feed has been followed (nil until first reached).
    let relayCursors = Mutex<[String: Int64]>([:])
    /// When this node last completed an anti-entropy round with a peer (microseconds), and
    /// when it last refilled from its peers after being away longer than the tombstone horizon.
    let contact = Mutex<(last: Int64?, rejoinedAt: Date?, setAside: Int)>((nil, nil, 0))
    /// From the moment a node finds it was away longer than the horizon until its first pull
    /// after setting its history aside: it serves no data meanwhile.
    let refilling = Atomic<Bool>(false)

    public static let batchSize = 500
    /// Most revision ids answered or asked for in one anti-entropy exchange.
    public static let maxIDsPerExchange = 100_000

    public init(
        settings: ClusterSettings,
        store: any ReplicatedStorage,
        transport: any PeerTransporting,
        saltFingerprint: String,
        logger: Logger,
        observer: (any ClusterObserver)?,
        changeRelay: (any ChangeRelaying)? = nil
    ) {
        self.changeRelay = changeRelay
        self.settings = settings
        self.store = store
        self.transport = transport
        self.saltFingerprint = saltFingerprint
        self.logger = logger
        self.observer = observer
        var statuses: [String: PeerStatus] = [:]
        var signals: [String: WakeSignal] = [:]
        // (A list with duplicates names each peer once.)
        for peer in settings.peers {
            statuses[peer] = PeerStatus(nodeID: peer)
            signals[peer] = WakeSignal()
        }
        peers = Mutex(statuses)
        wakeups = Mutex(signals)
        // Generations are unique across peers (each generation's loops start once).
        let initial = Array(Set(settings.peers)).sorted()
        membership = Mutex((initial, Dictionary(uniqueKeysWithValues: initial.enumerated().map { ($1, $0) }), initial.count, []))
        (added, addedContinuation) = AsyncStream.makeStream(of: String.self)
        rules = RevisionRules(maxAheadMillis: settings.maxClockSkewMillis, maxCiphertextBytes: settings.maxCiphertextBytes)
        observer?.membershipChanged(total: settings.peers.count + 1, healthy: 1)
        readContact()
    }

    // MARK: State for the HTTP layer

    public var peerStatuses: [PeerStatus] { peers.withLock { Array($0.values) }.sorted { $0.nodeID < $1.nodeID } }

    /// False when this node's salt differs from the cluster's; it must not serve data then.
    public var saltIsConsistent: (consistent: Bool, reason: String?) { saltConsistency.withLock { $0 } }

    public var lastSync: Date? { lastSyncTime.withLock { $0 } }

    public var healthyPeers: [String] { peers.withLock { $0.values.filter(\.healthy).map(\.nodeID) }.sorted() }

    /// The healthy peers whose salt is this node's: the ones whose revisions it takes.
    var healthyPeersWithOurSalt: [String] {
        peers.withLock { $0.values.filter { $0.healthy && $0.saltFingerprint == saltFingerprint }.map(\.nodeID) }
    }

    /// This node's clock against its healthy peers' median (ms, positive: ahead), and whether
    /// that is beyond `OSC_CLUSTER_MAX_CLOCK_SKEW`.
    public var clockStatus: (offsetMillis: Int64?, ahead: Bool) { clockState.withLock { $0 } }

    /// Throws `ClockAhead` while this node's clock runs ahead of its peers by more than the
    /// skew allowed: a write stamped now would win over later writes elsewhere.
    public func ensureClockAllowsWrites() throws {
        let (offset, ahead) = clockStatus
        if ahead, let offset {
            throw ClockAhead(seconds: Double(offset) / 1000, maxSkewSeconds: settings.maxClockSkew.seconds)
        }
    }

    var safety: (any ClusterSafetyObserver)? { observer as? any ClusterSafetyObserver }

    /// Called after a local write commits: wakes the shippers (a federated node's ship only
    /// its users and tokens).
    public func localWriteCommitted() { wakeAll() }

    private func wakeAll() {
        for signal in wakeups.withLock({ Array($0.values) }) { signal.signal() }
    }

    /// Whether shutdown has begun (`beginShutdown()`).
    public var isShuttingDown: Bool { shuttingDown.load(ordering: .sequentiallyConsistent) }

    /// The peers now (`OSC_CLUSTER_NODES` at start, then each reload's).
    public var currentPeers: [String] { membership.withLock { $0.peers } }

    private func generation(_ peer: String) -> Int? { membership.withLock { $0.generation[peer] } }

    /// Replaces the peers without a restart (SIGHUP): an added peer gets a shipper from the
    /// start of this node's history (so it receives everything) and joins health checks,
    /// anti-entropy and the write quorum; a removed one is no longer shipped to, probed or
    /// counted, its outbox cursor is dropped, and its signed requests are refused (by the
    /// caller's verifier). Returns what changed.
    @discardableResult
    public func setPeers(_ nodes: [String]) async -> (added: [String], removed: [String]) {
        let wanted = Array(Set(nodes.filter { $0 != settings.nodeID })).sorted()
        // An empty list (a truncated file, a blank variable) would drop every peer and make
        // `majority` this node alone: refused, membership unchanged.
        guard !wanted.isEmpty else {
            logger.error("cluster membership reload names no peer; membership unchanged", metadata: ["nodes": "\(nodes.joined(separator: ","))"])
            return ([], [])
        }
        let (add, remove) = membership.withLock { m -> ([String], [String]) in
            let add = wanted.filter { m.generation[$0] == nil }
            let remove = m.peers.filter { !wanted.contains($0) }
            for peer in remove { m.generation[peer] = nil }
            for peer in add {
                m.generation[peer] = m.next
                m.next += 1
            }
            m.peers = wanted
            return (add, remove)
        }
        guard !add.isEmpty || !remove.isEmpty else { return ([], []) }
        peers.withLock { s in
            for peer in remove { s[peer] = nil }
            for peer in add { s[peer] = PeerStatus(nodeID: peer) }
        }
        let removedSignals = wakeups.withLock { w -> [WakeSignal] in
            for peer in add { w[peer] = WakeSignal() }
            return remove.compactMap { w.removeValue(forKey: $0) }
        }
        for signal in removedSignals { signal.signal() }
        // A removed peer's outbox is dropped; an added one starts from the beginning of this
        // node's history (a cursor left from an earlier membership would skip revisions).
        for peer in remove + add { try? await store.forgetPeer(peer) }
        for peer in add { addedContinuation.yield(peer) }
        // Fewer peers can meet a waiting write's quorum.
        quorumWaiters.check()
        updateSaltConsistency()
        observer?.membershipChanged(total: wanted.count + 1, healthy: healthyPeers.count + 1)
        logger.notice(
            "cluster membership changed",
            metadata: [
                "added": "\(add.joined(separator: ","))", "removed": "\(remove.joined(separator: ","))", "peers": "\(wanted.joined(separator: ","))",
            ]
        )
        return (add, remove)
    }

    /// Shutdown begins (SIGTERM): writes waiting for their quorum get 503 at once (each is
    /// committed here and stays in the durable outbox, shipped at the next start), requests to
    /// peers end within about a second whatever the peer does, and the loops end. Called before
    /// the HTTP server drains, so that the drain does not wait on an unreachable peer.
    public func beginShutdown() {
        shuttingDown.store(true, ordering: .sequentiallyConsistent)
        quorumWaiters.stop()
        sleepers.stop()
        transport.stop()
        addedContinuation.finish()
        wakeAll()
    }

    /// What this node ships to its peers and accepts from them: everything in replica mode;
    /// in federated mode only the users and tokens, which every node must know (a login
    /// works on any node; a revocation holds on every node).
    func replicates(_ r: Revision) -> Bool { replicates(environment: r.environment) }

    func replicates(environment: String) -> Bool {
        settings.mode == .replica || environment == EntryNames.identityEnvironment
    }

    /// Waits until `settings.writeQuorum` nodes hold this node's revisions up to `seq`.
    public func awaitQuorum(seq: Int64) async throws {
        guard settings.mode == .replica else { return }
        // The cluster's size now: a reload that adds or removes a peer applies to waiting writes.
        let required: @Sendable () -> Int = { self.settings.writeQuorum.required(clusterSize: self.currentPeers.count + 1) }
        guard required() > 1 else { return }
        let reached: @Sendable () -> Int = { 1 + self.peers.withLock { $0.values.filter { $0.holds(seq) }.count } }
        if reached() >= required() { return }
        // Woken by each acknowledgement from a peer, not by polling; at the peer timeout, 503.
        let deadline = ContinuousClock.now + settings.peerTimeout
        let met = await quorumWaiters.wait(until: deadline) { reached() >= required() }
        if !met { throw QuorumNotReached(required: required(), reached: reached()) }
    }

    // MARK: Service

    public func run() async throws {
        logger.info("cluster starting", metadata: ["mode": "\(settings.mode.rawValue)", "peers": "\(settings.peers.joined(separator: ","))"])
        // Before any shipper starts: a node that was away longer than the horizon refills.
        await loadContact()
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.healthLoop() }
                for peer in self.currentPeers { self.addPeerLoops(peer, to: &group) }
                if self.settings.mode == .replica {
                    group.addTask { await self.antiEntropyLoop() }
                } else {
                    group.addTask { await self.identitySyncLoop() }
                }
                // Peers added by a reload, until shutdown ends the stream.
                for await peer in self.added { self.addPeerLoops(peer, to: &group) }
                await group.waitForAll()
            }
        } onGracefulShutdown: {
            self.sleepers.stop()
            self.addedContinuation.finish()
            self.wakeAll()
        }
        logger.info("cluster stopped")
        // Loops ended early by `beginShutdown()` wait here for the service group's own
        // shutdown: a service that returns before it makes the group cancel the HTTP server
        // instead of draining it.
        try? await gracefulShutdown()
    }

    /// A peer's own loops: its shipper, and in federated mode its change relay. Each ends
    /// when the peer is removed (or removed and added again: new loops take over).
    private func addPeerLoops(_ peer: String, to group: inout TaskGroup<Void>) {
        // Each generation's loops start once, whether the peer was listed at start, streamed
        // by a reload, or both (a reload before `run()`).
        guard
            let generation = membership.withLock({ m -> Int? in
                guard let g = m.generation[peer], !m.started.contains(g) else { return nil }
                m.started.insert(g)
                return g
            })
        else { return }
        group.addTask { await self.shipLoop(peer, generation: generation) }
        if settings.mode == .federated, changeRelay != nil {
            group.addTask { await self.changeRelayLoop(peer, generation: generation) }
        }
    }

    private func isCurrent(_ peer: String, _ generation: Int) -> Bool { self.generation(peer) == generation }

    private var stopping: Bool {
        Task.isCancelled || Task.isShuttingDownGracefully || shuttingDown.load(ordering: .sequentiallyConsistent)
    }

    /// false when the loop should end instead (shutdown, cancellation), at once.
    private func sleep(_ duration: Duration) async -> Bool {
        if stopping { return false }
        _ = await sleepers.wait(until: .now + duration) { false }
        return !stopping
    }

    // MARK: Health

    private func healthLoop() async {
        repeat {
            await checkHealth()
        } while await sleep(settings.healthInterval)
    }

    private struct HealthProbe: Sendable {
        let peer: String
        let reply: PeerHealthReply?
        let error: String?
        /// Peer clock minus ours at the probe's midpoint, ms.
        var offsetMillis: Int64? = nil
    }

    public func checkHealth() async {
        await withTaskGroup(of: HealthProbe.self) { group in
            for peer in currentPeers {
                group.addTask {
                    do {
                        let sent = Int64(Date().timeIntervalSince1970 * 1000)
                        let reply = try await self.transport.json(peer, "GET", "/cluster/health", as: PeerHealthReply.self)
                        let received = Int64(Date().timeIntervalSince1970 * 1000)
                        var probe = HealthProbe(peer: peer, reply: reply, error: nil)
                        // Bounded: a peer's clock value never reaches arithmetic unchecked.
                        // Only probes whose round trip is short enough to bound the error well
                        // within the skew allowed (a delayed probe would skew the measure).
                        if let t = reply.time_ms, t > 0, t < (Int64(1) << 47), received - sent <= min(1000, self.settings.maxClockSkewMillis / 2) {
                            probe.offsetMillis = t - (sent + received) / 2
                        }
                        return probe
                    } catch {
                        return HealthProbe(peer: peer, reply: nil, error: "\(error)")
                    }
                }
            }
            for await probe in group {
                let (peer, reply, error) = (probe.peer, probe.reply, probe.error)
                peers.withLock { s in
                    s[peer]?.healthy = reply?.status == "healthy"
                    if let reply {
                        s[peer]?.lastSeen = Date()
                        s[peer]?.saltFingerprint = reply.salt_fingerprint.map { String($0.prefix(128)) }
                        s[peer]?.clockOffsetMillis = probe.offsetMillis
                        s[peer]?.lastError = nil
                    } else {
                        s[peer]?.lastError = error
                    }
                }
            }
        }
        for peer in currentPeers {
            let acked = peers.withLock { $0[peer]?.ackedSeq ?? 0 }
            if let depth = try? await store.outboxDepth(after: acked) {
                peers.withLock { $0[peer]?.outboxDepth = depth }
                observer?.outboxDepth(peer: peer, depth: depth)
            }
        }
        updateSaltConsistency()
        await updateClockState()
        let healthy = peers.withLock { $0.values.filter(\.healthy).count } + (saltIsConsistent.consistent ? 1 : 0)
        observer?.membershipChanged(total: currentPeers.count + 1, healthy: healthy)
    }

    /// Compares this node's clock with the median of the cluster's clocks: its healthy peers'
    /// and its own (with two or more peers, so that one skewed peer does not move an honest
    /// node's view of itself; with one, the peer's alone). Ahead beyond the skew allowed, the
    /// node refuses client writes and sets aside what it stamped beyond the cluster's time
    /// plus the skew (`setAsideFutureOwnRevisions`).
    private func updateClockState() async {
        var offsets = peers.withLock { $0.values.filter(\.healthy).compactMap(\.clockOffsetMillis) }
        guard !offsets.isEmpty else {
            clockState.withLock { $0 = (nil, false) }
            return
        }
        let measured = offsets.count
        if offsets.count >= 2 { offsets.append(0) }
        offsets.sort()
        // With an even count, the upper middle: the smaller claim that this node is ahead.
        let median = offsets[offsets.count / 2]
        let ours = -median
        let ahead = ours > settings.maxClockSkewMillis
        let was = clockState.withLock { state -> Bool in
            let was = state.ahead
            state = (ours, ahead)
            return was
        }
        safety?.clockOffset(seconds: Double(ours) / 1000, ahead: ahead)
        if ahead != was {
            if ahead {
                logger.critical(
                    "this node's clock runs ahead of its peers; refusing client writes",
                    metadata: [
                        "ahead_ms": "\(ours)", "max_clock_skew_ms": "\(settings.maxClockSkewMillis)",
                    ]
                )
            } else {
                logger.notice("this node's clock agrees with its peers again; accepting writes")
            }
        }
        // On the round that finds the clock ahead and the next (a write in flight then), what
        // this node stamped beyond the cluster's time: its peers refuse those revisions, and
        // once the clock is corrected they would otherwise win over later writes.
        let sweep = clockSweeps.withLock { n -> Bool in
            if ahead && !was { n = 2 }
            if !ahead { n = 0 }
            guard n > 0 else { return false }
            n -= 1
            return true
        }
        // Only on a majority of the whole cluster's clocks (this node's and at least two peers'):
        // one peer whose clock stepped back must not make a healthy node discard its writes.
        let clusterSize = currentPeers.count + 1
        if sweep, measured >= 2, measured + 1 > clusterSize / 2 { await setAsideFutureOwnRevisions(aheadMillis: ours) }
    }

    private func setAsideFutureOwnRevisions(aheadMillis: Int64) async {
        let clusterNow = Int64(Date().timeIntervalSince1970 * 1000) - aheadMillis
        let bound = clusterNow.addingReportingOverflow(settings.maxClockSkewMillis).partialValue
        // Only what no peer holds: a revision a peer took was within the skew of its clock.
        let heldByAPeer: @Sendable (Int64) -> Bool = { seq in self.peers.withLock { $0.values.contains { $0.holds(seq) } } }
        do {
            let count = try await store.setAsideOwnRevisions(stampedAfterMillis: bound, unless: heldByAPeer)
            if count > 0 {
                logger.critical(
                    "revisions this node stamped while its clock ran ahead of the cluster were set aside (its peers refuse them; kept in set_aside_revisions)",
                    metadata: ["revisions": "\(count)", "ahead_ms": "\(aheadMillis)"]
                )
                safety?.revisionsSetAside(count: count)
            }
        } catch {
            logger.error("could not set aside this node's future-stamped revisions", metadata: ["error": "\(error)"])
        }
    }

    /// This node serves only if its salt fingerprint is held by at least as many reachable
    /// nodes as any other fingerprint (ties go to the one held by the node id sorting first).
    private func updateSaltConsistency() {
        var holders: [String: [String]] = [saltFingerprint: [settings.nodeID]]
        for status in peerStatuses where status.healthy {
            if let fp = status.saltFingerprint { holders[fp, default: []].append(status.nodeID) }
        }
        let winner =
            holders.max { a, b in
                a.value.count != b.value.count ? a.value.count < b.value.count : (a.value.min() ?? "") > (b.value.min() ?? "")
            }?.key ?? saltFingerprint
        let consistent = winner == saltFingerprint
        let reason =
            consistent
            ? nil
            : "this node's salt (fingerprint \(saltFingerprint)) differs from the cluster's (\(winner), held by \(holders[winner]?.joined(separator: ", ") ?? "")); it refuses to serve data. Replace this node's salt file with the cluster's and restart it"
        let changed = saltConsistency.withLock { state -> Bool in
            let changed = state.consistent != consistent
            state = (consistent, reason)
            return changed
        }
        if changed {
            if consistent {
                logger.notice("salt agrees with the cluster again")
            } else {
                logger.critical("salt differs from the cluster", metadata: ["reason": "\(reason ?? "")"])
            }
        }
    }

    // MARK: Replication (replica mode; a federated node's users and tokens)

    private func shipLoop(_ peer: String, generation: Int) async {
        guard let wakeup = wakeups.withLock({ $0[peer] }) else { return }
        var cursor = (try? await store.peerCursor(peer)) ?? 0
        peers.withLock { $0[peer]?.ackedSeq = cursor }
        // The cursor is saved at most every 250 ms (within a second when idle: the wait below
        // times out), not after every batch: each save is a commit (an fsync) that would delay
        // the next write's shipping. A crash loses at most that much of it, and the peer
        // ignores revisions it already holds.
        var savedCursor = cursor
        var savedAt = ContinuousClock.now
        func saveCursor() async {
            guard cursor != savedCursor, isCurrent(peer, generation) else { return }
            do {
                try await store.setPeerCursor(peer, to: cursor)
                savedCursor = cursor
                savedAt = ContinuousClock.now
            } catch {}
        }
        defer {
            if cursor != savedCursor, isCurrent(peer, generation) {
                let c = cursor
                Task { try? await store.setPeerCursor(peer, to: c) }
            }
        }
        var failures = 0
        while !stopping && isCurrent(peer, generation) {
            let fetched: [(seq: Int64, revision: Revision)]
            let prunedHere: [(seq: Int64, marker: PrunedMarker)]
            do {
                fetched = try await store.ownRevisions(after: cursor, limit: Self.batchSize, maxBytes: settings.maxBatchBytes)
                // Own revisions pruned in the same range of sequence numbers (all after the cursor
                // when no revision is left): a peer that never had them numbers versions alike.
                prunedHere = try await store.ownPruned(after: cursor, through: fetched.last?.seq ?? Int64.max, limit: Self.batchSize)
                    .filter { replicates(environment: $0.marker.environment) }
            } catch {
                if !(await sleep(.seconds(1))) { return }
                continue
            }
            // A node away longer than the tombstone horizon ships nothing before it has refilled.
            if (fetched.isEmpty && prunedHere.isEmpty) || !saltIsConsistent.consistent || needsRejoin {
                if ContinuousClock.now - savedAt >= .milliseconds(250) { await saveCursor() }
                // Sleep until a local write or a periodic re-check (never ship under a foreign salt).
                await wakeup.wait(timeout: .seconds(1))
                continue
            }
            // Revisions the peer refused for good are not sent to it again (they stay in this
            // node's history; the cursor moves past them, so a restart does not resend them).
            let refused = peers.withLock { $0[peer]?.refusedSeqs ?? [] }
            let batch = fetched.filter { !refused.contains($0.seq) && replicates($0.revision) }
            do {
                if !batch.isEmpty || !prunedHere.isEmpty {
                    _ = try await transport.json(
                        peer,
                        "POST",
                        "/cluster/replicate",
                        body: ReplicationBatch(
                            origin: settings.nodeID,
                            revisions: batch.map(\.revision),
                            pruned: prunedHere.isEmpty ? nil : prunedHere.map(\.marker)
                        ),
                        as: ReplicationAck.self
                    )
                }
                cursor = max(fetched.last?.seq ?? cursor, prunedHere.last?.seq ?? cursor)
                let answered = !batch.isEmpty || !prunedHere.isEmpty
                // The peer holds the batch durably once it answered: writes waiting for their
                // quorum go on at once.
                peers.withLock { s in
                    s[peer]?.ackedSeq = cursor
                    // Only a peer that answered is seen (a federated node's data writes send nothing).
                    guard answered else { return }
                    s[peer]?.healthy = true
                    s[peer]?.lastSeen = Date()
                    s[peer]?.replicationError = nil
                    s[peer]?.replicationErrorAt = nil
                }
                quorumWaiters.check()
                if ContinuousClock.now - savedAt >= .milliseconds(250) { await saveCursor() }
                observer?.revisionsSent(peer: peer, count: batch.count)
                failures = 0
            } catch {
                failures += 1
                safety?.replicationFailed(peer: peer)
                peers.withLock { s in
                    s[peer]?.lastError = "\(error)"
                    s[peer]?.replicationError = "\(error)"
                    s[peer]?.replicationErrorAt = Date()
                }
                if let refusal = Self.refusal(in: error) {
                    // Revisions the peer will never take are skipped for that peer so the rest of
                    // the outbox moves on. A stamp that is only ahead of the peer's clock is retried
                    // (honest skew heals as clocks move), unless this node knows its own clock is
                    // the one ahead, or the stamp is absurdly far ahead.
                    let ownClockAhead = clockStatus.ahead
                    let skip = refusal.rejected.filter { r in
                        batch.indices.contains(r.index) && (!r.ahead || ownClockAhead || (r.aheadSeconds ?? 0) > 3600)
                    }
                    if !skip.isEmpty {
                        safety?.revisionsSetAside(count: skip.count)
                        let skipped = skip.map { batch[$0.index].seq }
                        peers.withLock { s in
                            s[peer]?.refusedByPeer += skip.count
                            // Remembered for the quorum (bounded: the most recent ones).
                            s[peer]?.refusedSeqs.formUnion(skipped)
                            if let n = s[peer]?.refusedSeqs.count, n > 10_000, let low = s[peer]?.refusedSeqs.min() {
                                s[peer]?.refusedSeqs.remove(low)
                            }
                        }
                        logger.error(
                            "a peer refused revisions of this node for good; they are no longer sent to it",
                            metadata: [
                                "peer": "\(peer)", "revisions": "\(skip.count)", "reason": "\(skip[0].reason)",
                            ]
                        )
                        continue
                    }
                }
                if failures == 1 || failures % 50 == 0 {
                    logger.warning(
                        "replication to peer failed; will retry",
                        metadata: ["peer": "\(peer)", "error": "\(error)", "pending_from_seq": "\(cursor)"]
                    )
                }
                let backoff = Duration.milliseconds(min(2000, 50 << min(failures, 6)))
                if !(await sleep(backoff)) { return }
            }
        }
    }

    /// The refusal a peer sent back for a replication batch, if the error carries one.
    static func refusal(in error: any Error) -> ReplicationRefusal? {
        guard let e = error as? PeerError, let status = e.status, status == 422 || status == 503, let body = e.body else { return nil }
        return try? JSONDecoder().decode(ReplicationRefusal.self, from: body)
    }

    /// Revisions pushed by a peer, checked field by field (`RevisionRules`) and applied by
    /// last-writer-wins on (hlc, origin) only if every one passes: a refused batch changes
    /// nothing and names each refused revision. `sender` is the authenticated peer, or nil
    /// where peers authenticate with the API key; either way the batch's origin must be a
    /// configured peer (never this node) and every revision must be the origin's own.
    public func receive(_ batch: ReplicationBatch, sender: String?) async throws -> ReplicationAck {
        let origin = batch.origin
        if let sender, sender != origin {
            throw ReplicationRefusal(detail: "batch origin '\(origin.prefix(80))' is not the authenticated sender \(sender)", rejected: [])
        }
        guard origin != settings.nodeID, currentPeers.contains(origin) else {
            throw ReplicationRefusal(detail: "batch origin '\(origin.prefix(80))' is not a configured peer of this node", rejected: [])
        }
        var rejected: [ReplicationRefusal.Rejected] = []
        for (i, r) in batch.revisions.enumerated() {
            guard r.origin == origin else {
                rejected.append(.init(index: i, reason: "revision origin differs from the sender", ahead: false, aheadSeconds: nil))
                continue
            }
            guard replicates(r) else {
                rejected.append(
                    .init(
                        index: i,
                        reason: "a federated node keeps its own entries: only users and tokens replicate",
                        ahead: false,
                        aheadSeconds: nil
                    )
                )
                continue
            }
            do {
                try rules.check(r)
            } catch let refusal {
                if case .ahead(let seconds) = refusal {
                    rejected.append(.init(index: i, reason: refusal.description, ahead: true, aheadSeconds: seconds))
                } else {
                    rejected.append(.init(index: i, reason: refusal.description, ahead: false, aheadSeconds: nil))
                }
            }
        }
        let markers = batch.pruned ?? []
        for m in markers {
            let why: String? =
                if m.origin != origin { "a pruned revision's origin differs from the sender" } else if !replicates(environment: m.environment) {
                    "a federated node keeps its own entries: only users and tokens replicate"
                } else { (try? rules.check(m)) == nil ? "a pruned revision's names or stamp are out of bounds" : nil }
            if let why { rejected.append(.init(index: batch.revisions.count, reason: why, ahead: false, aheadSeconds: nil)) }
        }
        if !rejected.isEmpty {
            let refusal = ReplicationRefusal(
                detail: "\(rejected.count) of \(batch.revisions.count) revisions refused (first: \(rejected[0].reason)); nothing was applied",
                rejected: Array(rejected.prefix(1000))
            )
            safety?.revisionsRefused(peer: origin, reason: refusal.onlyAhead ? "ahead" : "invalid", count: rejected.count)
            logger.warning(
                "refused replicated revisions",
                metadata: ["peer": "\(origin)", "refused": "\(rejected.count)", "first": "\(rejected[0].reason)"]
            )
            throw refusal
        }
        let outcome = try await store.apply(batch: batch.revisions, pruned: markers)
        observer?.revisionsReceived(peer: origin, count: outcome.applied)
        if outcome.conflicts > 0 { observer?.conflictsResolved(outcome.conflicts) }
        if outcome.identityConflicts > 0 { reportIdentityConflicts(outcome.identityConflicts, peer: origin) }
        return ReplicationAck(applied: outcome.applied, conflicts: outcome.conflicts)
    }

    private func reportIdentityConflicts(_ count: Int, peer: String) {
        safety?.identityConflicts(count)
        logger.error(
            "revisions with a known identity but other content were received; the lower content hash is kept on every node",
            metadata: ["peer": "\(peer)", "revisions": "\(count)"]
        )
    }

    // MARK: Anti-entropy (replica mode)

    private let synced = Atomic<Bool>(false)
    /// Whether this node has completed an anti-entropy pull (federated: of users and tokens)
    /// from a peer since it started: it holds what that peer held then, revocations included.
    public var hasSynced: Bool { synced.load(ordering: .relaxed) }

    /// Until the next completed pull, this node holds nothing it can vouch for (a refill).
    func markUnsynced() { synced.store(false, ordering: .relaxed) }

    /// Whether every current peer holds this node's own revision `seq`.
    public func everyPeerHolds(_ seq: Int64) -> Bool {
        let current = currentPeers
        return peers.withLock { s in current.allSatisfy { s[$0]?.holds(seq) ?? false } }
    }

    private func antiEntropyLoop() async {
        // A first round soon after start fills a new or returning node.
        guard await sleep(.milliseconds(500)) else { return }
        repeat {
            await antiEntropyRound()
        } while await sleep(settings.syncInterval)
    }

    /// Compares digests with every healthy peer and pulls the revisions this node lacks.
    public func antiEntropyRound() async {
        let started = ContinuousClock.now
        let startedMicros = Self.nowMicros()
        guard saltIsConsistent.consistent else { return }
        let sameSalt = healthyPeersWithOurSalt
        // Refilled from peers it can reach: a node still cut off keeps what it has meanwhile.
        if needsRejoin, !sameSalt.isEmpty { await rejoin() }
        var reached = false
        for peer in currentPeers where sameSalt.contains(peer) {
            do {
                let repaired = try await pull(from: peer)
                reached = true
                peers.withLock { $0[peer]?.lastSync = Date() }
                synced.store(true, ordering: .relaxed)
                refilling.store(false, ordering: .sequentiallyConsistent)
                if repaired > 0 {
                    observer?.antiEntropyRepaired(peer: peer, count: repaired)
                    logger.info("anti-entropy repaired revisions", metadata: ["peer": "\(peer)", "revisions": "\(repaired)"])
                }
            } catch {
                logger.debug("anti-entropy round failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
        if reached { recordContact(startedMicros) }
        lastSyncTime.withLock { $0 = Date() }
        observer?.syncFinished(seconds: (ContinuousClock.now - started).seconds)
    }

    private func pull(from peer: String) async throws -> Int {
        let remote = try await transport.json(peer, "GET", "/cluster/digest", as: StoreDigest.self)
        var local = try await store.digest()
        // Collected keys first: their revisions, here or still on the peer, are not merged.
        if let collected = remote.collected, collected != local.collected {
            try await pullCollected(from: peer, expected: remote.collectedKeys ?? 0)
            local = try await store.digest()
        }
        guard remote.digest != local.digest, remote.buckets.count == local.buckets.count else { return 0 }
        let differing = (0..<local.buckets.count).filter { remote.buckets[$0] != local.buckets[$0] }
        var repaired = 0
        for chunk in stride(from: 0, to: differing.count, by: 32).map({ Array(differing[$0..<min($0 + 32, differing.count)]) }) {
            let remoteIDs = try await transport.json(peer, "POST", "/cluster/buckets", body: BucketsRequest(buckets: chunk), as: RevisionIDList.self)
                .ids
            guard remoteIDs.count <= Self.maxIDsPerExchange else {
                throw PeerError(peer: peer, status: nil, reason: "peer answered \(remoteIDs.count) revision ids for \(chunk.count) buckets; refused")
            }
            var localIDs = Set<RevisionID>()
            for bucket in chunk { localIDs.formUnion(try await store.revisionIDs(bucket: bucket)) }
            var seen = Set<RevisionID>()
            let missing = remoteIDs.filter { !localIDs.contains($0) && seen.insert($0).inserted }
            for start in stride(from: 0, to: missing.count, by: Self.batchSize) {
                var pending = Array(missing[start..<min(start + Self.batchSize, missing.count)])
                while !pending.isEmpty {
                    let ids = pending
                    let fetched = try await transport.json(peer, "POST", "/cluster/fetch", body: RevisionIDList(ids: ids), as: RevisionList.self)
                        .revisions
                    // A peer answers a prefix when the rest would be too large: ask again for the rest.
                    let answered = Set(fetched.map(\.id.identity))
                    pending = ids.filter { !answered.contains($0.identity) }
                    if fetched.isEmpty || pending.count == ids.count { pending = [] }
                    // What a peer answers is checked like what it pushes; refused revisions are skipped.
                    var accepted: [Revision] = []
                    var refused = 0
                    let asked = Set(ids.map(\.identity))
                    for r in fetched.prefix(ids.count) where asked.contains(r.id.identity) {
                        do {
                            try rules.check(r)
                            accepted.append(r)
                        } catch {
                            refused += 1
                        }
                    }
                    if refused > 0 {
                        safety?.revisionsRefused(peer: peer, reason: "anti_entropy", count: refused)
                        logger.warning("anti-entropy refused revisions from a peer", metadata: ["peer": "\(peer)", "refused": "\(refused)"])
                    }
                    let outcome = try await store.apply(batch: accepted, pruned: [])
                    repaired += outcome.applied
                    if outcome.conflicts > 0 { observer?.conflictsResolved(outcome.conflicts) }
                    if outcome.identityConflicts > 0 {
                        repaired += outcome.identityConflicts
                        reportIdentityConflicts(outcome.identityConflicts, peer: peer)
                    }
                    observer?.revisionsReceived(peer: peer, count: outcome.applied)
                }
            }
        }
        return repaired
    }

    // MARK: Federated users and tokens

    /// A federated node's catch-up on users and tokens (what the shippers push, pulled from
    /// each peer's current records, tombstones included): soon after start, then every
    /// `OSC_CLUSTER_SYNC_INTERVAL`. A returning node trusts no token before the first pull.
    private func identitySyncLoop() async {
        guard await sleep(.milliseconds(500)) else { return }
        repeat {
            await identitySyncRound()
        } while await sleep(hasSynced ? settings.syncInterval : .seconds(1))
    }

    /// Pulls every healthy peer's users and tokens and applies them (last writer wins).
    public func identitySyncRound() async {
        guard saltIsConsistent.consistent else { return }
        let sameSalt = healthyPeersWithOurSalt.sorted()
        guard !sameSalt.isEmpty else { return }
        for (peer, records) in await entriesByPeer(environment: EntryNames.identityEnvironment, peers: sameSalt) {
            // Checked like pushed revisions (`entriesByPeer`), and only records of users and tokens.
            guard let records = records?.filter({ $0.environment == EntryNames.identityEnvironment }) else { continue }
            do {
                let outcome = try await store.apply(batch: records, pruned: [])
                if outcome.applied > 0 { observer?.antiEntropyRepaired(peer: peer, count: outcome.applied) }
                if outcome.identityConflicts > 0 { reportIdentityConflicts(outcome.identityConflicts, peer: peer) }
                peers.withLock { $0[peer]?.lastSync = Date() }
                synced.store(true, ordering: .relaxed)
            } catch {
                logger.debug("users and tokens of a peer not applied", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
        lastSyncTime.withLock { $0 = Date() }
    }

    // MARK: Federated change events

    /// Follows one federated peer's own changes (about once a second) and hands them to the
    /// relay: each change once, from where the peer stood when this node first reached it.
    private func changeRelayLoop(_ peer: String, generation: Int) async {
        var cursor: Int64?
        while !stopping && isCurrent(peer, generation) {
            var more = false
            do {
                let after = cursor ?? 0
                let page = try await transport.json(
                    peer,
                    "GET",
                    "/cluster/changes?after=\(after)&limit=\(cursor == nil ? 0 : 256)",
                    as: ChangePage.self
                )
                if let known = cursor, page.head < known {
                    // The peer's feed went back (a new store): follow it from its new head.
                    cursor = page.head
                } else if let known = cursor {
                    let changes = try checkedChanges(page, after: known, from: peer)
                    if !changes.isEmpty { changeRelay?.relayed(changes, from: peer) }
                    cursor = max(known, page.through)
                    // Straight on only while the page moved the cursor (a page that did not must not spin).
                    more = page.through > known && page.through < page.head
                } else {
                    cursor = page.head
                }
            } catch {
                logger.debug("change feed of a peer unavailable", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
            if let cursor { relayCursors.withLock { $0[peer] = cursor } }
            if !more, !(await sleep(.seconds(1))) { break }
        }
    }

    /// A peer's page of changes, checked like any peer input: in order, after the cursor,
    /// within what it says it read, its own writes only, each revision valid.
    func checkedChanges(_ page: ChangePage, after cursor: Int64, from peer: String) throws -> [StoredChange] {
        guard page.head >= 0, page.through <= page.head, page.changes.count <= 512 else {
            throw PeerInputError(kind: .malformed, description: "change page out of bounds")
        }
        var last = cursor
        var out: [StoredChange] = []
        for record in page.changes {
            guard record.seq > last, record.seq <= page.through, let kind = ChangeKind(rawValue: record.kind),
                record.revision.origin == peer, (try? rules.check(record.revision)) != nil,
                (kind == .deleted) == record.revision.deleted
            else {
                throw PeerInputError(kind: .malformed, description: "change \(record.seq) refused")
            }
            last = record.seq
            out.append(StoredChange(seq: record.seq, kind: kind, revision: record.revision))
        }
        return out
    }

    // MARK: Federated reads

    /// The newest revision of (environment, key) among the healthy peers, asked in parallel.
    public func federatedLookup(environment: String, key: String) async -> Revision? {
        let query = "environment=\(Self.percentEncode(environment))&key=\(Self.percentEncode(key))"
        return await withTaskGroup(of: Revision?.self) { group in
            for peer in healthyPeers {
                group.addTask {
                    guard let r = try? await self.transport.json(peer, "GET", "/cluster/revision?\(query)", as: Revision.self),
                        r.environment == environment, r.key == key, (try? self.rules.check(r)) != nil
                    else { return nil }
                    return r
                }
            }
            var newest: Revision?
            for await r in group {
                if let r, newest.map({ r.supersedes(hlc: $0.hlc, origin: $0.origin) }) ?? true { newest = r }
            }
            return newest
        }
    }

    /// Current entries (as revisions) of every healthy peer, for aggregated lists.
    public func federatedEntries(environment: String?, category: String?) async -> [Revision] {
        await entriesByPeer(environment: environment, category: category, peers: healthyPeers).compactMap(\.entries).flatMap { $0 }
    }

    /// Each peer's current entries (tombstones included; each checked like a replicated
    /// revision), or nil for a peer that did not answer; every configured peer by default.
    public func entriesByPeer(
        tenant: String = Revision.defaultTenant,
        environment: String? = nil,
        category: String? = nil,
        peers: [String]? = nil
    ) async -> [(peer: String, entries: [Revision]?)] {
        var query: [String] = []
        if tenant != Revision.defaultTenant { query.append("tenant=\(Self.percentEncode(tenant))") }
        if let environment { query.append("environment=\(Self.percentEncode(environment))") }
        if let category { query.append("category=\(Self.percentEncode(category))") }
        let path = "/cluster/entries" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let asked = peers ?? currentPeers
        let answers = await withTaskGroup(of: (String, [Revision]?).self) { group in
            for peer in asked {
                group.addTask {
                    guard let revisions = try? await self.transport.json(peer, "GET", path, as: RevisionList.self).revisions else {
                        return (peer, nil)
                    }
                    return (peer, revisions.filter { (try? self.rules.check($0)) != nil })
                }
            }
            return await group.reduce(into: [String: [Revision]?]()) { $0[$1.0] = $1.1 }
        }
        return asked.map { ($0, answers[$0] ?? nil) }
    }

    static func percentEncode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}

/// Tasks waiting for a condition until a deadline: writes waiting for their write quorum
/// (`check()` after a peer acknowledged more resumes every waiter whose condition now holds),
/// and the loops' sleeps. Each waiter ends at its deadline, when its task is cancelled, or
/// at `stop()` (shutdown).
final class DeadlineWaiters: Sendable {
    private struct Waiter {
        let met: @Sendable () -> Bool
        let continuation: CheckedContinuation<Bool, Never>
    }

    private let state = Mutex<(next: UInt64, waiters: [UInt64: Waiter], stopped: Bool)>((0, [:], false))

    /// true when `met` held before `deadline` (and before `stop()`).
    func wait(until deadline: ContinuousClock.Instant, _ met: @escaping @Sendable () -> Bool) async -> Bool {
        guard
            let id = state.withLock({ s -> UInt64? in
                if s.stopped { return nil }
                s.next &+= 1
                return s.next
            })
        else { return met() }
        let timer = Task {
            try? await Task.sleep(until: deadline)
            self.finish(id, false)
        }
        defer { timer.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let stopped = state.withLock { s -> Bool in
                    if !s.stopped { s.waiters[id] = Waiter(met: met, continuation: continuation) }
                    return s.stopped
                }
                if stopped {
                    continuation.resume(returning: met())
                    return
                }
                // An acknowledgement between the caller's check and the registration is not
                // missed, nor a deadline that passed before it, nor a cancellation.
                if met() {
                    finish(id, true)
                } else if ContinuousClock.now >= deadline || Task.isCancelled {
                    finish(id, false)
                }
            }
        } onCancel: {
            self.finish(id, false)
        }
    }

    func check() {
        let ready = state.withLock { s -> [Waiter] in
            let ids = s.waiters.filter { $0.value.met() }.map(\.key)
            return ids.compactMap { s.waiters.removeValue(forKey: $0) }
        }
        for waiter in ready { waiter.continuation.resume(returning: true) }
    }

    /// Ends every wait now and every later one at once (shutdown): each returns whether its
    /// condition holds at that moment.
    func stop() {
        let all = state.withLock { s -> [Waiter] in
            s.stopped = true
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for waiter in all { waiter.continuation.resume(returning: waiter.met()) }
    }

    private func finish(_ id: UInt64, _ value: Bool) {
        let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
        waiter?.continuation.resume(returning: value)
    }
}
