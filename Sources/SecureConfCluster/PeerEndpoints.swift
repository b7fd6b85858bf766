import Foundation
import SecureConfStore

/// A peer's request refused before anything was applied; the server maps it to 400 or 409.
public struct PeerInputError: Error, CustomStringConvertible {
    public enum Kind: Sendable { case malformed, foreignSalt }
    public let kind: Kind
    public let description: String
}

/// The server side of the cluster protocol: what a node answers its peers, from wire types
/// to wire types. The HTTP layer authenticates the peer, decodes the body and encodes the
/// result; the in-process transport of the coordinator's tests calls these directly.
public struct PeerEndpoints: Sendable {
    public let coordinator: ClusterCoordinator
    /// About the most revision bytes one fetch answers.
    public static let maxReplyBytes = 32 * 1024 * 1024
    public static let maxBatchRevisions = 10_000

    public init(coordinator: ClusterCoordinator) {
        self.coordinator = coordinator
    }

    var store: any ReplicatedStorage { coordinator.store }

    /// `POST /cluster/replicate`: applies a batch from `sender`, whose salt fingerprint must
    /// be this node's. A batch with revisions that cannot be applied is refused whole
    /// (`ReplicationRefusal`, naming each), and nothing is applied.
    public func replicate(_ batch: ReplicationBatch, sender: String?, senderSaltFingerprint: String?) async throws -> ReplicationAck {
        try checkSalt(of: senderSaltFingerprint)
        guard batch.revisions.count <= Self.maxBatchRevisions, (batch.pruned?.count ?? 0) <= Self.maxBatchRevisions else {
            throw PeerInputError(kind: .malformed, description: "At most \(Self.maxBatchRevisions) revisions (and pruned revisions) per batch")
        }
        return try await coordinator.receive(batch, sender: sender)
    }

    /// A replication message's sender must hold this node's salt; checked before its body is read.
    public func checkSalt(of senderSaltFingerprint: String?) throws(PeerInputError) {
        guard senderSaltFingerprint == coordinator.saltFingerprint else {
            throw PeerInputError(
                kind: .foreignSalt,
                description:
                    "Sender's salt fingerprint \(senderSaltFingerprint ?? "(none)") is not this cluster's \(coordinator.saltFingerprint); revisions refused"
            )
        }
    }

    /// `GET /cluster/digest`.
    public func digest() async throws -> StoreDigest { try await store.digest() }

    /// `POST /cluster/buckets`: the revision ids in the buckets asked for.
    public func buckets(_ asked: BucketsRequest) async throws -> RevisionIDList {
        let wanted = Set(asked.buckets)
        guard asked.buckets.count <= RevisionDigest.bucketCount, wanted.allSatisfy({ (0..<RevisionDigest.bucketCount).contains($0) }) else {
            throw PeerInputError(
                kind: .malformed,
                description: "buckets: at most \(RevisionDigest.bucketCount) numbers from 0 to \(RevisionDigest.bucketCount - 1)"
            )
        }
        var ids: [RevisionID] = []
        for b in wanted.sorted() { ids += try await store.revisionIDs(bucket: b) }
        return RevisionIDList(ids: ids)
    }

    /// `POST /cluster/fetch`: the revisions asked for, bounded in bytes (the asker fetches
    /// what is left in another request).
    public func fetch(_ asked: RevisionIDList) async throws -> RevisionList {
        guard asked.ids.count <= Self.maxBatchRevisions else {
            throw PeerInputError(kind: .malformed, description: "At most \(Self.maxBatchRevisions) revisions per fetch")
        }
        return RevisionList(revisions: Revision.prefix(try await store.revisions(ids: asked.ids), maxBytes: Self.maxReplyBytes) { $0 })
    }

    /// `POST /cluster/collected`: a page of the markers of collected keys.
    public func collected(_ asked: CollectedRequest) async throws -> CollectedList {
        let limit = asked.limit ?? ClusterCoordinator.collectedPage
        guard (1...ClusterCoordinator.collectedPage).contains(limit) else {
            throw PeerInputError(kind: .malformed, description: "limit: from 1 to \(ClusterCoordinator.collectedPage)")
        }
        if let after = asked.after, EntryNames.keyProblem(after.key) != nil || TenantNames.storedProblem(after.environment) != nil {
            throw PeerInputError(kind: .malformed, description: "after: an environment and a key as stored")
        }
        return CollectedList(markers: try await store.collectedMarkers(after: asked.after.map { ($0.environment, $0.key) }, limit: limit))
    }

    /// `GET /cluster/revision`: the newest revision of one key (federated lookups).
    public func revision(environment: String, key: String) async throws -> Revision {
        guard let revision = try await store.newestRevision(EntryName(environment: environment, key: key)) else {
            throw StoreError.notFound(environment: environment, key: key)
        }
        return revision
    }

    /// `GET /cluster/changes`: this node's own changes after `after` (at most `limit`, 0 for
    /// none: a new reader learns `head`), for federated peers' event streams.
    public func changes(after: Int64, limit: Int) async throws -> ChangePage {
        let head = try await store.lastChangeSeq()
        guard limit > 0, after < head else { return ChangePage(through: max(0, min(after, head)), head: head, changes: []) }
        let page = try await store.changes(after: max(0, after), limit: min(limit, 512))
        // Federated nodes relay the default tenant's changes (tenants of their own stay on their node).
        let own = page.changes.filter { $0.revision.origin == coordinator.settings.nodeID && $0.revision.tenant == Revision.defaultTenant }
        var kept: [ChangeRecord] = []
        var bytes = 0
        for change in own {
            bytes += change.revision.ciphertext.utf8.count
            if bytes > Self.maxReplyBytes && !kept.isEmpty {
                return ChangePage(through: kept.last!.seq, head: head, changes: kept)
            }
            kept.append(ChangeRecord(seq: change.seq, kind: change.kind.rawValue, revision: change.revision))
        }
        return ChangePage(through: page.through, head: head, changes: kept)
    }

    /// `GET /cluster/entries`: a tenant's current entries, tombstones included (a newer delete
    /// here must hide an older copy on another node), named as stored (`TenantNames`).
    public func entries(tenant: String = Revision.defaultTenant, environment: String?, category: String?) async throws -> RevisionList {
        let entries = try await store.all(tenant: tenant, environment: environment, category: category, includeDeleted: true)
        return RevisionList(revisions: entries.map(\.revision))
    }
}

extension ConfigEntry {
    /// The current revision this entry holds, as it is stored and replicated (its tenant
    /// folded into the environment's name).
    public var revision: Revision {
        Revision(
            environment: TenantNames.stored(tenant: tenant, environment: environment),
            key: key,
            category: category,
            ciphertext: ciphertext,
            hlc: hlc,
            origin: origin,
            deleted: deleted,
            createdAt: createdAt,
            updatedAt: updatedAt
        )
    }
}
