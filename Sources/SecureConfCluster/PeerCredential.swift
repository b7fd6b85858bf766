import Foundation
import SecureConfCrypto
import SecureConfStore
import Synchronization

/// The peer credential: `OSC_CLUSTER_SECRET`, which clients never hold. Every node-to-node
/// request is signed with it (HMAC-SHA256 over method, path, receiver, sender, time, nonce
/// and the body's hash), and every answer to a signed request is signed back (over the
/// request's nonce, the status, the responder and the body's hash), so neither a client
/// nor anyone on the path can forge, redirect or replay a message.
public struct PeerCredential: Sendable {
    public static let senderHeader = "X-SecureConf-Peer"
    public static let timeHeader = "X-SecureConf-Time"
    public static let nonceHeader = "X-SecureConf-Nonce"
    public static let signatureHeader = "X-SecureConf-Signature"
    /// The body's SHA-256 (hex), covered by the signature: the receiver checks the signature
    /// before it reads a byte of the body, then the body against this hash.
    public static let contentHashHeader = "X-SecureConf-Content-SHA256"

    private let signingKey: [UInt8]
    /// Keys actor ids on every node alike (derived from the secret, never exposed).
    public let actorKey: [UInt8]

    public init(secret: [UInt8]) {
        signingKey = OpenSSL.hmacSHA256(key: secret, data: Array("secureconf peer signing v1".utf8))
        actorKey = OpenSSL.hmacSHA256(key: secret, data: Array("secureconf actor key v2".utf8))
    }

    public static func bodyHash(_ body: some ContiguousBytes) -> String { Hex.encode(OpenSSL.sha256(body)) }

    public func requestSignature(
        method: String,
        path: String,
        receiver: String,
        sender: String,
        timeMillis: Int64,
        nonce: String,
        bodyHash: String
    ) -> String {
        let message = ["secureconf-request-v1", method, path, receiver, sender, String(timeMillis), nonce, bodyHash].joined(separator: "\n")
        return "v1=" + Hex.encode(OpenSSL.hmacSHA256(key: signingKey, data: Array(message.utf8)))
    }

    public func responseSignature(nonce: String, status: Int, responder: String, bodyHash: String) -> String {
        let message = ["secureconf-response-v1", nonce, String(status), responder, bodyHash].joined(separator: "\n")
        return "v1=" + Hex.encode(OpenSSL.hmacSHA256(key: signingKey, data: Array(message.utf8)))
    }

    /// Compares signatures in constant time (as fixed-length digests).
    public static func same(_ a: String, _ b: String) -> Bool {
        OpenSSL.constantTimeEquals(OpenSSL.sha256(Array(a.utf8)), OpenSSL.sha256(Array(b.utf8)))
    }

    public static func newNonce() -> String { Hex.encode(OpenSSL.randomBytes(16)) }
}

/// Why a signed peer request was refused.
public enum PeerAuthRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    case missing
    case malformed(String)
    case unknownSender(String)
    case badSignature
    /// The signature is right, but the sender's clock differs from ours by more than the window.
    case clockSkew(seconds: Double, window: Double)
    case replayed

    public var description: String {
        switch self {
        case .missing: "this node-to-node route needs the peer credential (OSC_CLUSTER_SECRET); the API key does not open it"
        case let .malformed(why): "peer signature headers are malformed: \(why)"
        case let .unknownSender(s): "sender '\(s.prefix(80))' is not a configured peer of this node"
        case .badSignature: "peer signature does not verify: OSC_CLUSTER_SECRET must be the same on every node"
        case let .clockSkew(seconds, window):
            String(
                format:
                    "clock skew: the sender's clock is %.1f s %@ this node's, outside the ±%.0f s window of signed messages; synchronise the clocks (NTP)",
                abs(seconds),
                seconds > 0 ? "ahead of" : "behind",
                window
            )
        case .replayed: "this signed message was already received (replay refused)"
        }
    }
}

/// Checks signed requests: known sender, valid signature, time within the window, nonce
/// not seen within the window (a bounded set of recent nonces).
public final class PeerRequestVerifier: Sendable {
    public let credential: PeerCredential
    public let nodeID: String
    /// The nodes whose signed requests are accepted (replaced by a membership reload).
    public var peers: Set<String> { peerSet.withLock { $0 } }
    private let peerSet: Mutex<Set<String>>
    public let windowMillis: Int64
    /// Nonces seen per sender, expiring in time order (O(1) amortised; one sender's flood
    /// cannot evict another's).
    private struct Seen {
        var nonces = Set<String>()
        var queue: [(expiry: Int64, nonce: String)] = []
        var head = 0

        mutating func purge(now: Int64) {
            while head < queue.count, queue[head].expiry <= now {
                nonces.remove(queue[head].nonce)
                head += 1
            }
            if head > 1024, head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
        }
    }
    private let seen = Mutex<[String: Seen]>([:])
    private let wallClockMillis: @Sendable () -> Int64
    /// Most nonces kept per sender within the window; beyond, messages are refused rather than
    /// let memory grow (a peer sending more than ~7,000 messages a second).
    static let maxNonces = 500_000

    public init(
        credential: PeerCredential,
        nodeID: String,
        peers: [String],
        windowMillis: Int64,
        wallClockMillis: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.credential = credential
        self.nodeID = nodeID
        self.peerSet = Mutex(Set(peers.filter { $0 != nodeID }))
        self.windowMillis = windowMillis
        self.wallClockMillis = wallClockMillis
    }

    /// A membership reload: only these nodes' requests are accepted from now on.
    public func setPeers(_ nodes: [String]) {
        peerSet.withLock { $0 = Set(nodes.filter { $0 != nodeID }) }
    }

    /// The authenticated sender of a request with these headers and body hash.
    /// `allowSkew` accepts a message outside the time window (the health probe, which is how
    /// nodes measure each other's clocks; it changes nothing and its nonce is still checked).
    public func verify(
        method: String,
        path: String,
        sender: String?,
        time: String?,
        nonce: String?,
        signature: String?,
        bodyHash: String,
        allowSkew: Bool = false
    ) throws(PeerAuthRefusal) -> String {
        guard let sender, let time, let nonce, let signature else {
            if sender == nil && time == nil && nonce == nil && signature == nil { throw .missing }
            throw .malformed("X-SecureConf-Peer, -Time, -Nonce and -Signature go together")
        }
        guard let millis = Int64(time), millis > 0 else { throw .malformed("time is not a positive whole number of milliseconds") }
        guard nonce.utf8.count == 32, nonce.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw .malformed("nonce is not 32 hex digits")
        }
        guard sender != nodeID, peerSet.withLock({ $0.contains(sender) }) else { throw .unknownSender(sender) }
        let expected = credential.requestSignature(
            method: method,
            path: path,
            receiver: nodeID,
            sender: sender,
            timeMillis: millis,
            nonce: nonce,
            bodyHash: bodyHash
        )
        guard PeerCredential.same(expected, signature) else { throw .badSignature }
        let now = wallClockMillis()
        let (offset, overflow) = millis.subtractingReportingOverflow(now)
        if !allowSkew, overflow || abs(offset) > windowMillis {
            throw .clockSkew(seconds: overflow ? Double(Int64.max) / 1000 : Double(offset) / 1000, window: Double(windowMillis) / 1000)
        }
        let fresh: Bool = seen.withLock { all in
            var s = all[sender, default: Seen()]
            defer { all[sender] = s }
            s.purge(now: now)
            if s.nonces.count >= Self.maxNonces || s.nonces.contains(nonce) { return false }
            // Kept until the message could no longer pass the time check (bounded for skewed ones).
            s.nonces.insert(nonce)
            s.queue.append((min(max(millis, now), now + windowMillis) + windowMillis, nonce))
            return true
        }
        guard fresh else { throw .replayed }
        return sender
    }
}
