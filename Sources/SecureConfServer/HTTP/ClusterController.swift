import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SecureConfCluster
import SecureConfCore
import SecureConfStore

/// The node-to-node endpoints (behind `PeerAuthMiddleware`): replication, digests,
/// anti-entropy fetches and federated lookups, over `PeerEndpoints` (SecureConfCluster).
/// Bodies carry encrypted revisions only.
struct ClusterController<Context: PeerAuthenticatedContext>: Sendable {
    let node: SecureConfNode

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

    private func endpoints() throws -> PeerEndpoints { PeerEndpoints(coordinator: try requireCluster()) }

    @Sendable func replicate(_ request: Request, context: Context) async throws -> Response {
        let endpoints = try endpoints()
        try node.ensureServing()
        let sender = request.headers[HTTPField.Name(PeerTransport.saltFingerprintHeader)!]
        try endpoints.checkSalt(of: sender)
        let batch = try await decode(ReplicationBatch.self, request)
        do {
            return try encode(try await endpoints.replicate(batch, sender: context.peer.id, senderSaltFingerprint: sender))
        } catch let refusal as ReplicationRefusal {
            // Nothing was applied; the body names each refused revision so the sender can set it aside.
            let status: HTTPResponse.Status = refusal.onlyAhead ? .serviceUnavailable : .unprocessableContent
            return JSONResponse.make(status, Array(try JSONEncoder().encode(refusal)))
        }
    }

    @Sendable func digest(_ request: Request, context: Context) async throws -> Response {
        try encode(try await endpoints().digest())
    }

    @Sendable func buckets(_ request: Request, context: Context) async throws -> Response {
        let endpoints = try endpoints()
        return try encode(try await endpoints.buckets(try await decode(BucketsRequest.self, request)))
    }

    @Sendable func fetch(_ request: Request, context: Context) async throws -> Response {
        let endpoints = try endpoints()
        return try encode(try await endpoints.fetch(try await decode(RevisionIDList.self, request)))
    }

    @Sendable func collected(_ request: Request, context: Context) async throws -> Response {
        let endpoints = try endpoints()
        return try encode(try await endpoints.collected(try await decode(CollectedRequest.self, request)))
    }

    @Sendable func revision(_ request: Request, context: Context) async throws -> Response {
        let endpoints = try endpoints()
        let query = try RequestInput.query(request)
        let environment = try RequestInput.environment(query["environment"])
        guard let key = query["key"] else { throw ServiceError.badRequest("key is required") }
        return try encode(try await endpoints.revision(environment: environment, key: try RequestInput.validateKey(key)))
    }

    @Sendable func entries(_ request: Request, context: Context) async throws -> Response {
        let endpoints = try endpoints()
        let query = try RequestInput.query(request)
        let tenant = query["tenant"] ?? Revision.defaultTenant
        if tenant != Revision.defaultTenant, let problem = TenantNames.problem(tenant) { throw ServiceError.badRequest(problem) }
        return try encode(
            try await endpoints.entries(
                tenant: tenant,
                environment: query["environment"].flatMap { $0.isEmpty ? nil : $0 },
                category: query["category"].flatMap { $0.isEmpty ? nil : $0 }
            )
        )
    }

    @Sendable func changes(_ request: Request, context: Context) async throws -> Response {
        let endpoints = try endpoints()
        let query = try RequestInput.query(request)
        func number(_ name: String, _ range: ClosedRange<Int64>) throws(ServiceError) -> Int64 {
            guard let raw = query[name], let n = Int64(raw), range.contains(n) else {
                throw ServiceError.badRequest("\(name) must be an integer in \(range.lowerBound)…\(range.upperBound)")
            }
            return n
        }
        return try encode(try await endpoints.changes(after: try number("after", 0...Int64.max), limit: Int(try number("limit", 0...512))))
    }
}
