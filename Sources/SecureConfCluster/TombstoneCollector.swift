import Foundation
import Logging
import SecureConfStore
import ServiceLifecycle

/// Collects deleted keys (`OSC_TOMBSTONE_HORIZON`): a tombstone older than the horizon goes,
/// with its key's whole history, once every peer holds it; a marker per key stays for one
/// horizon after the collection so that no copy of its revisions comes back, then goes too. In a cluster a
/// node collects only its own tombstones (it knows which peers acknowledged them); the
/// markers reach the other nodes by anti-entropy. Runs every quarter horizon (1 s to 60 s).
public final class TombstoneCollector: Service, Sendable {
    public let store: any ReplicatedStorage
    public let horizon: Duration
    /// The cluster, or nil on a single node (nothing to wait for).
    let coordinator: ClusterCoordinator?
    let logger: Logger
    let collected: @Sendable (CollectionOutcome) -> Void

    public init(
        store: any ReplicatedStorage,
        horizon: Duration,
        coordinator: ClusterCoordinator?,
        logger: Logger,
        collected: @escaping @Sendable (CollectionOutcome) -> Void = { _ in }
    ) {
        self.store = store
        self.horizon = horizon
        self.coordinator = coordinator
        self.logger = logger
        self.collected = collected
    }

    var interval: Duration { min(.seconds(60), max(.seconds(1), horizon / 4)) }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await round()
            } catch {
                logger.warning("tombstone collection round failed; retried next round", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// One round: collects what may go, drops markers collected a horizon ago. Returns what it collected.
    @discardableResult
    public func round(nowMicros: Int64 = ClusterCoordinator.nowMicros()) async throws -> CollectionOutcome {
        let horizonMicros = Int64(horizon.seconds * 1_000_000)
        var total = CollectionOutcome()
        // A node that must refill collects nothing before it has.
        if coordinator?.needsRejoin == true { return total }
        let origin = coordinator?.settings.nodeID
        while true {
            let candidates = try await store.collectableTombstones(deletedBeforeMicros: nowMicros - horizonMicros, origin: origin, limit: 500)
            let ready = candidates.filter { coordinator?.everyPeerHolds($0.seq) ?? true }
            let outcome = try await store.collect(ready.map(\.marker))
            total.keys += outcome.keys
            total.revisions += outcome.revisions
            // The oldest page is waiting for a peer: the newer ones wait too.
            if candidates.count < 500 || outcome.keys == 0 { break }
        }
        let expired = try await store.expireCollected(collectedBeforeMicros: nowMicros - horizonMicros)
        if total.keys > 0 || expired > 0 {
            collected(total)
            logger.info(
                "collected deleted keys past the tombstone horizon",
                metadata: ["keys": "\(total.keys)", "revisions": "\(total.revisions)", "markers_expired": "\(expired)"]
            )
        }
        return total
    }
}
