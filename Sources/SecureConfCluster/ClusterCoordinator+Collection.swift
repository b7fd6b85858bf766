import Foundation
import SecureConfStore

/// Tombstone collection in a cluster (`OSC_TOMBSTONE_HORIZON`). A node collects its own
/// tombstones once every peer holds them (`TombstoneCollector`); the markers spread by
/// anti-entropy, before revisions are compared, so every node drops the key and none takes
/// its revisions back. A node that has not completed an anti-entropy round for longer than
/// the horizon (down, cut off, restored from an old backup) may hold revisions of keys the
/// others collected and forgot: it sets its whole history aside and refills from its peers
/// (a full state transfer) before it ships anything.
extension ClusterCoordinator {
    static let lastContactMetadata = "cluster_last_contact_micros"
    /// Markers asked for per exchange.
    static let collectedPage = 1000

    public static func nowMicros() -> Int64 { Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()) }

    var horizonMicros: Int64? { settings.tombstoneHorizon.map { Int64($0.seconds * 1_000_000) } }

    /// Whether this node has been out of touch with its peers for longer than the horizon.
    var needsRejoin: Bool {
        guard let horizon = horizonMicros, let last = contact.withLock({ $0.last }) else { return false }
        return Self.nowMicros() - last > horizon
    }

    /// Collection state for `/cluster/status`: when this node last completed a round with a
    /// peer, when it last refilled after being away, and how many revisions that set aside.
    public var collectionStatus: (lastContact: Date?, rejoinedAt: Date?, setAside: Int) {
        contact.withLock { c in (c.last.map { Date(timeIntervalSince1970: Double($0) / 1_000_000) }, c.rejoinedAt, c.setAside) }
    }

    /// Whether this node is refilling after being away longer than the horizon (it serves no data).
    public var isRefilling: Bool { refilling.load(ordering: .sequentiallyConsistent) }

    /// Reads the last contact when the coordinator is made, before the HTTP server serves: a
    /// node that was away too long serves nothing until it has refilled.
    func readContact() {
        guard horizonMicros != nil, let stored = (try? store.metadata(Self.lastContactMetadata)).flatMap({ $0.flatMap { Int64($0) } })
        else { return }
        contact.withLock { $0.last = stored }
        if needsRejoin, (try? store.hasData()) == true { refilling.store(true, ordering: .sequentiallyConsistent) }
    }

    /// At start: refills if the node was away too long; a store that never recorded a contact
    /// starts counting now.
    func loadContact() async {
        guard horizonMicros != nil else { return }
        if contact.withLock({ $0.last }) == nil {
            recordContact(Self.nowMicros())
        } else if needsRejoin {
            await rejoin()
        }
    }

    func recordContact(_ micros: Int64) {
        guard horizonMicros != nil else { return }
        contact.withLock { $0.last = max($0.last ?? 0, micros) }
        try? store.setMetadata(Self.lastContactMetadata, String(micros))
    }

    /// Sets this node's whole history aside (kept in `set_aside_revisions`) and starts counting
    /// contact again: the next anti-entropy round fills it from its peers, as a new node.
    func rejoin() async {
        guard let horizon = settings.tombstoneHorizon else { return }
        let away = contact.withLock { $0.last }.map { Double(Self.nowMicros() - $0) / 1_000_000 } ?? 0
        let reason = "this node was out of touch with the cluster longer than OSC_TOMBSTONE_HORIZON; it refilled from its peers"
        guard (try? store.hasData()) == true else {
            recordContact(Self.nowMicros())
            return
        }
        refilling.store(true, ordering: .sequentiallyConsistent)
        do {
            // Its own writes of the last two horizons stay (and ship): a delete one of them could
            // wrongly outlive would be younger than that, and its marker still held by the peers.
            let moved = try await store.setAsideAllForRejoin(
                reason: reason,
                keepingOwnSinceMicros: Self.nowMicros() - 2 * Int64(horizon.seconds * 1_000_000) + 2 * settings.maxClockSkewMillis * 1000
            )
            markUnsynced()
            contact.withLock {
                $0.rejoinedAt = Date()
                $0.setAside += moved
            }
            recordContact(Self.nowMicros())
            logger.error(
                "this node was away from the cluster longer than the tombstone horizon: its history is set aside and it refills from its peers",
                metadata: [
                    "away_seconds": "\(Int(away))", "horizon_seconds": "\(Int(horizon.seconds))", "revisions_set_aside": "\(moved)",
                ]
            )
        } catch {
            logger.error("could not set this node's stale history aside; it does not ship until it can", metadata: ["error": "\(error)"])
        }
    }

    /// Takes the peer's markers this node lacks, each checked like a revision: names, origin
    /// and stamp within bounds, and old enough that the peer may have collected it.
    func pullCollected(from peer: String, expected: Int) async throws {
        guard let horizon = horizonMicros else {
            logger.warning(
                "a peer collects deleted keys (OSC_TOMBSTONE_HORIZON) but this node does not: set the same horizon on every node",
                metadata: ["peer": "\(peer)"]
            )
            return
        }
        let skew = settings.maxClockSkewMillis * 1000
        var after: CollectedRequest.Position?
        var refused = 0
        // Bounded by what the peer said it holds (and an absolute cap), whatever it answers.
        let pages = min(1000, expected / Self.collectedPage + 2)
        for _ in 0..<pages {
            let page = try await transport.json(
                peer,
                "POST",
                "/cluster/collected",
                body: CollectedRequest(after: after, limit: Self.collectedPage),
                as: CollectedList.self
            ).markers
            guard page.count <= Self.collectedPage else {
                throw PeerError(peer: peer, status: nil, reason: "peer answered \(page.count) collected keys for \(Self.collectedPage); refused")
            }
            let now = Self.nowMicros()
            var accepted: [CollectedMarker] = []
            for m in page {
                let placed =
                    (try? rules.check(PrunedMarker(environment: m.environment, key: m.key, hlc: m.hlc, origin: m.origin, deleted: true))) != nil
                // No node collects a delete younger than the horizon, nor before the delete, nor in the future.
                guard placed, m.environment != EntryNames.identityEnvironment, m.deletedAt > 0,
                    m.deletedAt / 1000 <= HybridLogicalClock.millis(of: m.hlc) + 1000, now - m.deletedAt >= horizon - skew,
                    m.collectedAt >= m.deletedAt, m.collectedAt <= now + skew
                else {
                    refused += 1
                    continue
                }
                // A horizon after its collection a marker is dropped everywhere: taking it would only bring it back.
                if now - m.collectedAt < horizon { accepted.append(m) }
            }
            let outcome = try await store.applyCollected(accepted)
            refused += outcome.refused
            if outcome.keys > 0 {
                logger.info("collected deleted keys a peer collected", metadata: ["peer": "\(peer)", "keys": "\(outcome.keys)"])
            }
            guard page.count == Self.collectedPage, let last = page.last else { break }
            after = CollectedRequest.Position(environment: last.environment, key: last.key)
        }
        if refused > 0 {
            safety?.revisionsRefused(peer: peer, reason: "collected", count: refused)
            logger.warning("refused collected-key markers from a peer", metadata: ["peer": "\(peer)", "refused": "\(refused)"])
        }
    }
}
