import SecureConfCore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SecureConfCluster
import SecureConfStore

/// The node-to-node endpoints (behind `PeerAuthMiddleware`): replication, digests,
/// anti-entropy fetches and federated lookups. Bodies carry encrypted revisions only.
struct ClusterController<Context: PeerAuthenticatedContext>: Sendable {
    let node: SecureConfNode
    /// About the most revision bytes one fetch answers.
    static var maxReplyBytes: Int { 32 * 1024 * 1024 }

    private func requireCluster() throws -> ClusterCoordinator {
        guard let cluster = node.cluster else { throw ServiceError(.clusterDisabled, "Clustering is not enabled on this node") }
        return cluster
    }

    private func decode<T: Decodable>(_ type: T.Type, _ request: Request) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: 64 * 1024 * 1024)
        } catch {
            throw ServiceError(.bodyTooLarge, "Cluster message larger than 64 MiB")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: buffer))
        } catch {
            throw ServiceError.badRequest("Malformed cluster message")
        }
    }

    private func encode(_ value: some Encodable) throws -> Response {
        JSONResponse.make(.ok, Array(try JSONEncoder().encode(value)))
    }

    @Sendable func replicate(_ request: Request, context: Context) async throws -> Response {
        let cluster = try requireCluster()
        try node.ensureServing()
        let sender = request.headers[HTTPField.Name(PeerTransport.saltFingerprintHeader)!]
        guard sender == node.saltFingerprint else {
            throw ServiceError(.saltConflict, "Sender's salt fingerprint \(sender ?? "(none)") is not this cluster's \(node.saltFingerprint); revisions refused")
        }
        let batch = try await decode(ReplicationBatch.self, request)
        guard batch.revisions.count <= 10_000 else { throw ServiceError.badRequest("At most 10000 revisions per batch") }
        do {
            return try encode(try await cluster.receive(batch, sender: context.peer.id))
        } catch let refusal as ReplicationRefusal {
            // Nothing was applied; the body names each refused revision so the sender can set it aside.
            let status: HTTPResponse.Status = refusal.onlyAhead ? .serviceUnavailable : .unprocessableContent
            return JSONResponse.make(status, Array(try JSONEncoder().encode(refusal)))
        }
    }

    @Sendable func digest(_ request: Request, context: Context) async throws -> Response {
        _ = try requireCluster()
        return try encode(try await node.store.digest())
    }

    @Sendable func buckets(_ request: Request, context: Context) async throws -> Response {
        _ = try requireCluster()
        let asked = try await decode(BucketsRequest.self, request)
        let wanted = Set(asked.buckets)
        guard asked.buckets.count <= RevisionDigest.bucketCount, wanted.allSatisfy({ (0..<RevisionDigest.bucketCount).contains($0) }) else {
            throw ServiceError.badRequest("buckets: at most \(RevisionDigest.bucketCount) numbers from 0 to \(RevisionDigest.bucketCount - 1)")
        }
        var ids: [RevisionID] = []
        for b in wanted.sorted() {
            ids += try await node.store.revisionIDs(bucket: b)
        }
        return try encode(RevisionIDList(ids: ids))
    }

    @Sendable func fetch(_ request: Request, context: Context) async throws -> Response {
        _ = try requireCluster()
        let asked = try await decode(RevisionIDList.self, request)
        guard asked.ids.count <= 10_000 else { throw ServiceError.badRequest("At most 10000 revisions per fetch") }
        // Bounded in bytes too: the asker fetches what is left in another request.
        let revisions = Revision.prefix(try await node.store.revisions(ids: asked.ids), maxBytes: Self.maxReplyBytes) { $0 }
        return try encode(RevisionList(revisions: revisions))
    }

    @Sendable func revision(_ request: Request, context: Context) async throws -> Response {
        _ = try requireCluster()
        let query = try RequestInput.query(request)
        let environment = try RequestInput.environment(query["environment"])
        guard let key = query["key"] else { throw ServiceError.badRequest("key is required") }
        guard let revision = try await node.store.newestRevision(environment: environment, key: try RequestInput.validateKey(key)) else {
            throw StoreError.notFound(environment: environment, key: key)
        }
        return try encode(revision)
    }

    @Sendable func entries(_ request: Request, context: Context) async throws -> Response {
        _ = try requireCluster()
        let query = try RequestInput.query(request)
        let environment = query["environment"].flatMap { $0.isEmpty ? nil : $0 }
        let category = query["category"].flatMap { $0.isEmpty ? nil : $0 }
        // Tombstones included: a newer delete here must hide an older copy on another node.
        let entries = try await node.store.list(environment: environment, category: category, includeDeleted: true)
        return try encode(RevisionList(revisions: entries.map(\.revision)))
    }
}

extension ConfigEntry {
    /// The current revision this entry holds.
    var revision: Revision {
        Revision(environment: environment, key: key, category: category, ciphertext: ciphertext, hlc: hlc, origin: origin,
                 deleted: deleted, createdAt: createdAt, updatedAt: updatedAt)
    }
}
