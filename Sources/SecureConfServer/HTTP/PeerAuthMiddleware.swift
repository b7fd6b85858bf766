import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SecureConfCluster
import SecureConfCore
import SecureConfCrypto
import Synchronization

/// A request context that can carry the authenticated peer of a node-to-node request.
public protocol PeerAuthenticatedContext: RequestContext {
    var peer: PeerNote { get }
}

/// The peer that signed the request, once `PeerAuthMiddleware` has verified it.
public final class PeerNote: Sendable {
    private let sender = Mutex<String?>(nil)
    public init() {}
    func authenticated(_ id: String) { sender.withLock { $0 = id } }
    /// The authenticated sender, or nil (an API-key peer, or not a peer request).
    public var id: String? { sender.withLock { $0 } }
}

/// Guards the node-to-node routes. With `OSC_CLUSTER_SECRET`, a request must carry a valid
/// signature of a configured peer (the API key does not open these routes, except for
/// unsigned peers during an upgrade with `OSC_CLUSTER_ACCEPT_API_KEY_PEERS`), and the
/// answer is signed back. Without it, peers authenticate with the API key, as in
/// OpenSecureConf (reported as insecure at start, in `/cluster/status` and a metric). On a
/// node without clustering these routes do not exist (404). `optional` routes
/// (`/cluster/health`) also answer unsigned requests, unsigned.
struct PeerAuthMiddleware<Context: PeerAuthenticatedContext>: RouterMiddleware {
    let node: SecureConfNode
    var optional = false

    static var maxBody: Int { 64 * 1024 * 1024 }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let settings = node.configuration.clusterSettings else {
            if optional { return try await next(request, context) }
            throw ServiceError(.routeNotFound, "Not Found")
        }
        let h = request.headers
        let sender = h[HTTPField.Name(PeerCredential.senderHeader)!]
        let time = h[HTTPField.Name(PeerCredential.timeHeader)!]
        let nonce = h[HTTPField.Name(PeerCredential.nonceHeader)!]
        let signature = h[HTTPField.Name(PeerCredential.signatureHeader)!]
        let signed = sender != nil || time != nil || nonce != nil || signature != nil
        if let verifier = node.peerVerifier, signed {
            // The signature covers the body's hash, sent in a header: it is checked before a
            // byte of the body is read, so nobody without the secret can make a node buffer one.
            let claimedHash = h[HTTPField.Name(PeerCredential.contentHashHeader)!] ?? ""
            let peer: String
            do {
                guard claimedHash.utf8.count == 64 else {
                    throw PeerAuthRefusal.malformed("X-SecureConf-Content-SHA256 is missing or not 64 hex digits")
                }
                peer = try verifier.verify(
                    method: request.method.rawValue,
                    path: request.head.path ?? "",
                    sender: sender,
                    time: time,
                    nonce: nonce,
                    signature: signature,
                    bodyHash: claimedHash,
                    allowSkew: optional
                )
            } catch let error as PeerAuthRefusal {
                let kind: ErrorKind =
                    switch error {
                    case .clockSkew: .peerClockSkew
                    case .replayed: .peerReplayed
                    case .unknownSender: .peerUnknown
                    default: .peerAuthFailed
                    }
                node.metrics.peerRequestRefused(reason: kind.label)
                throw ServiceError(kind, error.description)
            }
            var request = request
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: Self.maxBody)
            } catch {
                throw ServiceError(.bodyTooLarge, "Cluster message larger than \(Self.maxBody / (1024 * 1024)) MiB")
            }
            guard PeerCredential.same(PeerCredential.bodyHash(body.readableBytesView), claimedHash) else {
                node.metrics.peerRequestRefused(reason: "peer_auth_failed")
                throw ServiceError(.peerAuthFailed, "the body does not match its signed hash")
            }
            context.peer.authenticated(peer)
            let response: Response
            do {
                response = try await next(request, context)
            } catch {
                // Errors are answered signed too: a peer acts on a refusal only if it is authentic.
                let apiError = ServiceError.from(error)
                if apiError.kind.isInternal { throw error }
                response = JSONResponse.error(status: apiError.status, detail: apiError.detail, headers: apiError.headers)
            }
            return try await Self.signed(response, nonce: nonce ?? "", responder: settings.nodeID, credential: verifier.credential)
        }
        if optional { return try await next(request, context) }
        if node.peerVerifier != nil, !settings.acceptAPIKeyPeers {
            node.metrics.peerRequestRefused(reason: "peer_auth_missing")
            throw ServiceError(.peerAuthMissing, PeerAuthRefusal.missing.description)
        }
        // API-key peers: OpenSecureConf's model, or the upgrade window.
        if node.configuration.apiKeyRequired || node.peerVerifier != nil {
            guard let given = h[RequestInput.apiKeyHeader] else { throw ServiceError.missingAPIKey }
            guard OpenSSL.constantTimeEquals(OpenSSL.sha256(Array(given.utf8)), OpenSSL.sha256(Array((node.configuration.apiKey ?? "").utf8))),
                node.configuration.apiKey != nil
            else { throw ServiceError.wrongAPIKey }
        }
        return try await next(request, context)
    }

    /// The response with its body collected and signed over (nonce, status, responder, body hash).
    static func signed(_ response: Response, nonce: String, responder: String, credential: PeerCredential) async throws -> Response {
        let collector = BodyCollector()
        try await response.body.write(CollectingWriter(collector: collector))
        let bytes = collector.bytes
        var headers = response.headers
        headers[HTTPField.Name(PeerCredential.signatureHeader)!] = credential.responseSignature(
            nonce: nonce,
            status: Int(response.status.code),
            responder: responder,
            bodyHash: PeerCredential.bodyHash(bytes)
        )
        headers[.contentLength] = String(bytes.count)
        return Response(status: response.status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

private final class BodyCollector: Sendable {
    private let buffer = Mutex<[UInt8]>([])
    func append(_ b: ByteBuffer) { buffer.withLock { $0 += b.readableBytesView } }
    var bytes: [UInt8] { buffer.withLock { $0 } }
}

private struct CollectingWriter: ResponseBodyWriter {
    let collector: BodyCollector
    mutating func write(_ buffer: ByteBuffer) async throws { collector.append(buffer) }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
