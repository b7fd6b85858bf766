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
    public let store: ConfigStore
    public let transport: PeerTransport
    public let saltFingerprint: String
    private let logger: Logger
    private let observer: (any ClusterObserver)?
    private let peers: Mutex<[String: PeerStatus]>
    /// Until the first health round has compared salts with the peers, the node does not serve data.
    private let saltConsistency = Mutex<(consistent: Bool, reason: String?)>(
        (false, "this node has not yet compared its salt with the cluster's nodes; retry in a moment"))
    private let wakeups: [String: WakeSignal]
    private let lastSyncTime = Mutex<Date?>(nil)

    public static let batchSize = 500

    public init(settings: ClusterSettings, store: ConfigStore, transport: PeerTransport, saltFingerprint: String, logger: Logger,
                observer: (any ClusterObserver)?) {
        self.settings = settings
        self.store = store
        self.transport = transport
        self.saltFingerprint = saltFingerprint
        self.logger = logger
        self.observer = observer
        var statuses: [String: PeerStatus] = [:]
        var signals: [String: WakeSignal] = [:]
        for peer in settings.peers {
            statuses[peer] = PeerStatus(nodeID: peer)
            signals[peer] = WakeSignal()
        }
        peers = Mutex(statuses)
        wakeups = signals
        observer?.membershipChanged(total: settings.peers.count + 1, healthy: 1)
    }

    // MARK: State for the HTTP layer

    public var peerStatuses: [PeerStatus] { peers.withLock { Array($0.values) }.sorted { $0.nodeID < $1.nodeID } }

    /// False when this node's salt differs from the cluster's; it must not serve data then.
    public var saltIsConsistent: (consistent: Bool, reason: String?) { saltConsistency.withLock { $0 } }

    public var lastSync: Date? { lastSyncTime.withLock { $0 } }

    public var healthyPeers: [String] { peers.withLock { $0.values.filter(\.healthy).map(\.nodeID) }.sorted() }

    /// Called after a local write commits: wakes the shippers.
    public func localWriteCommitted() {
        guard settings.mode == .replica else { return }
        for signal in wakeups.values { signal.signal() }
    }

    /// Waits until `settings.writeQuorum` nodes hold this node's revisions up to `seq`.
    public func awaitQuorum(seq: Int64) async throws {
        guard settings.mode == .replica else { return }
        let required = settings.writeQuorum.required(clusterSize: settings.peers.count + 1)
        guard required > 1 else { return }
        let deadline = ContinuousClock.now + settings.peerTimeout
        while true {
            let reached = 1 + peers.withLock { $0.values.filter { $0.ackedSeq >= seq }.count }
            if reached >= required { return }
            if ContinuousClock.now >= deadline { throw QuorumNotReached(required: required, reached: reached) }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    // MARK: Service

    public func run() async throws {
        logger.info("cluster starting", metadata: ["mode": "\(settings.mode.rawValue)", "peers": "\(settings.peers.joined(separator: ","))"])
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.healthLoop() }
                if self.settings.mode == .replica {
                    for peer in self.settings.peers {
                        group.addTask { await self.shipLoop(peer) }
                    }
                    group.addTask { await self.antiEntropyLoop() }
                }
                await group.waitForAll()
            }
        } onGracefulShutdown: {
            for signal in self.wakeups.values { signal.signal() }
        }
        logger.info("cluster stopped")
    }

    private var stopping: Bool { Task.isCancelled || Task.isShuttingDownGracefully }

    private func sleep(_ duration: Duration) async -> Bool {
        do {
            try await Task.sleep(for: duration)
        } catch {
            return false
        }
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
    }

    public func checkHealth() async {
        await withTaskGroup(of: HealthProbe.self) { group in
            for peer in settings.peers {
                group.addTask {
                    do {
                        return HealthProbe(peer: peer, reply: try await self.transport.json(peer, "GET", "/cluster/health", as: PeerHealthReply.self), error: nil)
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
                        s[peer]?.saltFingerprint = reply.salt_fingerprint
                        s[peer]?.lastError = nil
                    } else {
                        s[peer]?.lastError = error
                    }
                }
            }
        }
        for peer in settings.peers {
            let acked = peers.withLock { $0[peer]?.ackedSeq ?? 0 }
            if let depth = try? await store.outboxDepth(after: acked) {
                peers.withLock { $0[peer]?.outboxDepth = depth }
                observer?.outboxDepth(peer: peer, depth: depth)
            }
        }
        updateSaltConsistency()
        let healthy = peers.withLock { $0.values.filter(\.healthy).count } + (saltIsConsistent.consistent ? 1 : 0)
        observer?.membershipChanged(total: settings.peers.count + 1, healthy: healthy)
    }

    /// This node serves only if its salt fingerprint is held by at least as many reachable
    /// nodes as any other fingerprint (ties go to the one held by the node id sorting first).
    private func updateSaltConsistency() {
        var holders: [String: [String]] = [saltFingerprint: [settings.nodeID]]
        for status in peerStatuses where status.healthy {
            if let fp = status.saltFingerprint { holders[fp, default: []].append(status.nodeID) }
        }
        let winner = holders.max { a, b in
            a.value.count != b.value.count ? a.value.count < b.value.count : (a.value.min() ?? "") > (b.value.min() ?? "")
        }?.key ?? saltFingerprint
        let consistent = winner == saltFingerprint
        let reason = consistent ? nil :
            "this node's salt (fingerprint \(saltFingerprint)) differs from the cluster's (\(winner), held by \(holders[winner]?.joined(separator: ", ") ?? "")); it refuses to serve data. Replace this node's salt file with the cluster's and restart it"
        let changed = saltConsistency.withLock { state -> Bool in
            let changed = state.consistent != consistent
            state = (consistent, reason)
            return changed
        }
        if changed {
            if consistent { logger.notice("salt agrees with the cluster again") } else { logger.critical("salt differs from the cluster", metadata: ["reason": "\(reason ?? "")"]) }
        }
    }

    // MARK: Replication (replica mode)

    private func shipLoop(_ peer: String) async {
        guard let wakeup = wakeups[peer] else { return }
        var cursor = (try? await store.peerCursor(peer)) ?? 0
        peers.withLock { $0[peer]?.ackedSeq = cursor }
        var failures = 0
        while !stopping {
            let batch: [(seq: Int64, revision: Revision)]
            do {
                batch = try await store.ownRevisions(after: cursor, limit: Self.batchSize)
            } catch {
                if !(await sleep(.seconds(1))) { return }
                continue
            }
            if batch.isEmpty || !saltIsConsistent.consistent {
                // Sleep until a local write or a periodic re-check (never ship under a foreign salt).
                await wakeup.wait(timeout: .seconds(1))
                continue
            }
            do {
                let ack = try await transport.json(peer, "POST", "/cluster/replicate",
                                                   body: ReplicationBatch(origin: settings.nodeID, revisions: batch.map(\.revision)),
                                                   as: ReplicationAck.self)
                cursor = batch.last?.seq ?? cursor
                try await store.setPeerCursor(peer, to: cursor)
                peers.withLock { s in
                    s[peer]?.ackedSeq = cursor
                    s[peer]?.healthy = true
                    s[peer]?.lastSeen = Date()
                }
                observer?.revisionsSent(peer: peer, count: batch.count)
                _ = ack
                failures = 0
            } catch {
                failures += 1
                peers.withLock { $0[peer]?.lastError = "\(error)" }
                if failures == 1 || failures % 50 == 0 {
                    logger.warning("replication to peer failed; will retry", metadata: ["peer": "\(peer)", "error": "\(error)", "pending_from_seq": "\(cursor)"])
                }
                let backoff = Duration.milliseconds(min(2000, 50 << min(failures, 6)))
                if !(await sleep(backoff)) { return }
            }
        }
    }

    /// Revisions pushed by a peer: applied by last-writer-wins on (hlc, origin).
    public func receive(_ batch: ReplicationBatch) async throws -> ReplicationAck {
        let (applied, conflicts) = try await store.apply(batch: batch.revisions)
        observer?.revisionsReceived(peer: batch.origin, count: applied)
        if conflicts > 0 { observer?.conflictsResolved(conflicts) }
        return ReplicationAck(applied: applied, conflicts: conflicts)
    }

    // MARK: Anti-entropy (replica mode)

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
        guard saltIsConsistent.consistent else { return }
        let sameSalt = peers.withLock { $0.values.filter { $0.healthy && $0.saltFingerprint == saltFingerprint }.map(\.nodeID) }
        for peer in settings.peers where sameSalt.contains(peer) {
            do {
                let repaired = try await pull(from: peer)
                peers.withLock { $0[peer]?.lastSync = Date() }
                if repaired > 0 {
                    observer?.antiEntropyRepaired(peer: peer, count: repaired)
                    logger.info("anti-entropy repaired revisions", metadata: ["peer": "\(peer)", "revisions": "\(repaired)"])
                }
            } catch {
                logger.debug("anti-entropy round failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
        lastSyncTime.withLock { $0 = Date() }
        observer?.syncFinished(seconds: (ContinuousClock.now - started).seconds)
    }

    private func pull(from peer: String) async throws -> Int {
        let remote = try await transport.json(peer, "GET", "/cluster/digest", as: StoreDigest.self)
        let local = try await store.digest()
        guard remote.digest != local.digest, remote.buckets.count == local.buckets.count else { return 0 }
        let differing = (0..<local.buckets.count).filter { remote.buckets[$0] != local.buckets[$0] }
        var repaired = 0
        for chunk in stride(from: 0, to: differing.count, by: 32).map({ Array(differing[$0..<min($0 + 32, differing.count)]) }) {
            let remoteIDs = try await transport.json(peer, "POST", "/cluster/buckets", body: BucketsRequest(buckets: chunk), as: RevisionIDList.self).ids
            var localIDs = Set<RevisionID>()
            for bucket in chunk { localIDs.formUnion(try await store.revisionIDs(bucket: bucket)) }
            let missing = remoteIDs.filter { !localIDs.contains($0) }
            for start in stride(from: 0, to: missing.count, by: Self.batchSize) {
                let ids = Array(missing[start..<min(start + Self.batchSize, missing.count)])
                let revisions = try await transport.json(peer, "POST", "/cluster/fetch", body: RevisionIDList(ids: ids), as: RevisionList.self).revisions
                let (applied, conflicts) = try await store.apply(batch: revisions)
                repaired += applied
                if conflicts > 0 { observer?.conflictsResolved(conflicts) }
                observer?.revisionsReceived(peer: peer, count: applied)
            }
        }
        return repaired
    }

    // MARK: Federated reads

    /// The newest revision of (environment, key) among the healthy peers, asked in parallel.
    public func federatedLookup(environment: String, key: String) async -> Revision? {
        let query = "environment=\(Self.percentEncode(environment))&key=\(Self.percentEncode(key))"
        return await withTaskGroup(of: Revision?.self) { group in
            for peer in healthyPeers {
                group.addTask {
                    try? await self.transport.json(peer, "GET", "/cluster/revision?\(query)", as: Revision.self)
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
        var query: [String] = []
        if let environment { query.append("environment=\(Self.percentEncode(environment))") }
        if let category { query.append("category=\(Self.percentEncode(category))") }
        let path = "/cluster/entries" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        return await withTaskGroup(of: [Revision].self) { group in
            for peer in healthyPeers {
                group.addTask { (try? await self.transport.json(peer, "GET", path, as: RevisionList.self).revisions) ?? [] }
            }
            return await group.reduce(into: []) { $0 += $1 }
        }
    }

    static func percentEncode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}
