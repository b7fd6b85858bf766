import Foundation
import NIOPosix
import SecureConfHTTP

/// A peer answered with an error status or could not be reached.
public struct PeerError: Error, CustomStringConvertible {
    public let peer: String
    public let status: Int?
    public let reason: String
    /// The error reply's body, when there was one.
    public var body: Data? = nil
    public var description: String { "peer \(peer): \(status.map { "HTTP \($0): " } ?? "")\(reason)" }
}

/// A reply from a peer.
public struct PeerReply: Sendable {
    public let status: Int
    public let body: Data
    /// The reply's signature header ("" when absent).
    public var signature: String = ""
    /// Whether the reply is known to come from the peer: signed with the credential, or
    /// there is no credential to sign with.
    public var authenticated = true

    public init(status: Int, body: Data, signature: String = "", authenticated: Bool = true) {
        self.status = status
        self.body = body
        self.signature = signature
        self.authenticated = authenticated
    }
}

/// How a node talks to its peers: one request, one reply. `PeerTransport` (libcurl, signed)
/// is the real one; tests put the coordinator on an in-process transport.
public protocol PeerTransporting: Sendable {
    func request(_ peer: String, _ method: String, _ path: String, body: Data?, contentType: String) async throws -> PeerReply
    /// Shutdown: requests in flight end soon (failing), later ones fail at once.
    func stop()
}

extension PeerTransporting {
    public func stop() {}

    public func request(_ peer: String, _ method: String, _ path: String, body: Data? = nil) async throws -> PeerReply {
        try await request(peer, method, path, body: body, contentType: "application/json")
    }

    /// A JSON request whose reply must be 2xx and decode as `T`.
    public func json<T: Decodable>(
        _ peer: String,
        _ method: String,
        _ path: String,
        body: (some Encodable)? = Optional<Int>.none,
        as type: T.Type
    ) async throws -> T {
        let data = try body.map { try JSONEncoder().encode($0) }
        let reply = try await request(peer, method, path, body: data)
        guard (200..<300).contains(reply.status) else {
            throw PeerError(peer: peer, status: reply.status, reason: PeerError.detail(reply.body), body: reply.authenticated ? reply.body : nil)
        }
        do {
            return try JSONDecoder().decode(T.self, from: reply.body)
        } catch {
            throw PeerError(peer: peer, status: reply.status, reason: "unexpected reply: \(error)")
        }
    }
}

extension PeerError {
    /// The `detail` of an error reply, bounded and printable.
    static func detail(_ body: Data) -> String {
        let detail = (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["detail"] as? String ?? ""
        let printable = String(detail.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }.prefix(300).map(Character.init))
        return printable.isEmpty ? "request failed" : printable
    }
}

/// Node-to-node HTTP over libcurl (a C target over libcurl4-openssl-dev). Requests run
/// on a small dedicated thread pool, each thread reusing its own curl handle and so its
/// connections; the pool size bounds concurrency. Every request carries the cluster API
/// key and has a timeout; https peers are verified against `caFile` (or the system store).
public final class PeerTransport: PeerTransporting {
    public static let apiKeyHeader = "X-API-Key"
    /// Every inter-node request names the sender's salt fingerprint; receivers refuse
    /// revisions from a node whose salt is not theirs.
    public static let saltFingerprintHeader = "X-SecureConf-Salt-Fingerprint"
    private let pool: NIOThreadPool
    private let apiKeyHeaderLine: String
    private let fingerprintHeaderLine: String?
    private let scheme: String
    private let timeoutMillis: Int
    private let caFile: String?
    private let nodeID: String
    private let credential: PeerCredential?
    private let requireSignedReplies: Bool
    private let abort = CurlHTTP.Abort()

    /// `credential` signs every request and checks the signature of every 2xx reply (an
    /// unsigned one is refused unless `requireSignedReplies` is false: the upgrade window,
    /// when some peers do not sign yet). The API key travels too, for peers still on it.
    public init(
        apiKey: String,
        timeout: Duration,
        threads: Int = 8,
        scheme: String = "http",
        caFile: String? = nil,
        saltFingerprint: String? = nil,
        nodeID: String = "",
        credential: PeerCredential? = nil,
        requireSignedReplies: Bool = true
    ) {
        self.nodeID = nodeID
        self.credential = credential
        self.requireSignedReplies = requireSignedReplies
        pool = NIOThreadPool(numberOfThreads: max(1, threads))
        pool.start()
        apiKeyHeaderLine = "\(Self.apiKeyHeader): \(apiKey)"
        fingerprintHeaderLine = saltFingerprint.map { "\(Self.saltFingerprintHeader): \($0)" }
        self.scheme = scheme
        self.timeoutMillis = max(100, Int(timeout.seconds * 1000))
        self.caFile = caFile
    }

    deinit { pool.shutdownGracefully { _ in } }

    /// Requests in flight end within about a second, later ones at once: a node shutting down
    /// does not wait out the timeout of a peer that hangs.
    public func stop() { abort.trigger() }

    public typealias Reply = PeerReply

    public func request(_ peer: String, _ method: String, _ path: String, body: Data?, contentType: String) async throws -> Reply {
        let url = "\(scheme)://\(peer)\(path)"
        // With the credential, the API key travels only during an upgrade (peers still on it).
        var headerLines = credential == nil || !requireSignedReplies ? [apiKeyHeaderLine] : []
        if let fingerprintHeaderLine { headerLines.append(fingerprintHeaderLine) }
        let nonce = PeerCredential.newNonce()
        if let credential {
            let millis = Int64(Date().timeIntervalSince1970 * 1000)
            let bodyHash = PeerCredential.bodyHash(body ?? Data())
            let signature = credential.requestSignature(
                method: method,
                path: path,
                receiver: peer,
                sender: nodeID,
                timeMillis: millis,
                nonce: nonce,
                bodyHash: bodyHash
            )
            headerLines += [
                "\(PeerCredential.senderHeader): \(nodeID)", "\(PeerCredential.timeHeader): \(millis)",
                "\(PeerCredential.nonceHeader): \(nonce)", "\(PeerCredential.signatureHeader): \(signature)",
                "\(PeerCredential.contentHashHeader): \(bodyHash)",
            ]
        }
        if body != nil { headerLines.append("Content-Type: \(contentType)") }
        let headers = headerLines
        let timeout = timeoutMillis
        let caFile = self.caFile
        let abort = self.abort
        let outcome: Result<CurlHTTP.Reply, CurlFailure> = try await pool.runIfActive {
            CurlHTTP.perform(method: method, url: url, headers: headers, body: body, timeoutMillis: timeout, caFile: caFile, abort: abort)
        }
        var reply: Reply
        switch outcome {
        case .success(let r): reply = Reply(status: r.status, body: r.body, signature: r.signature)
        case .failure(let failure): throw PeerError(peer: peer, status: nil, reason: failure.reason)
        }
        if let credential {
            let signed =
                !reply.signature.isEmpty
                && PeerCredential.same(
                    credential.responseSignature(nonce: nonce, status: reply.status, responder: peer, bodyHash: PeerCredential.bodyHash(reply.body)),
                    reply.signature
                )
            if (200..<300).contains(reply.status) {
                if reply.signature.isEmpty && requireSignedReplies {
                    throw PeerError(
                        peer: peer,
                        status: reply.status,
                        reason: "reply is not signed with the peer credential (OSC_CLUSTER_SECRET); refused"
                    )
                }
                if !reply.signature.isEmpty && !signed {
                    throw PeerError(peer: peer, status: reply.status, reason: "reply signature does not verify; refused")
                }
            }
            // An error reply's body is acted on (a refusal names revisions) only when signed.
            reply.authenticated = signed || (!requireSignedReplies && reply.signature.isEmpty)
        }
        return reply
    }
}
