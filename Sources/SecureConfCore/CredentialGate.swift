import Foundation
import SecureConfCrypto
import SecureConfStore
import Synchronization

/// Turns a caller's user key into its derived key, always through the failed-attempt
/// limiter, and names credentials for history and audit without revealing them.
///
/// Every derivation (a cache miss with none in flight for that key) is counted as a failed
/// attempt before it runs, so that concurrent guesses cannot all pass one check; requests that
/// join a derivation in flight for the same key cost nothing more (so a burst of clients with
/// one new key is not refused). The count is refunded once the key is proven
/// (it opened a stored value), by the end of the request or by a later request. A wrong or
/// unusable key that cost no derivation counts when the request fails with it.
public final class CredentialGate: Sendable {
    public let keys: DerivedKeyCache
    public let limiter: AuthFailureLimiter
    /// Derivations counted as failures that a later proof of their key refunds.
    let pendingRefunds = PendingRefunds()
    /// Keys actor ids: a secret no client API exposes.
    private let actorKey: [UInt8]

    public init(keys: DerivedKeyCache, limiter: AuthFailureLimiter, actorKey: [UInt8]) {
        self.keys = keys
        self.limiter = limiter
        self.actorKey = actorKey
    }

    /// The caller's derived key: from the cache, else one shared derivation, unless the
    /// client has failed too often recently (429).
    public func derivedKey(for userKey: String, client: String) async throws -> CachedKey {
        if let cached = keys.cachedKey(for: userKey) {
            DerivationTracker.current?.used(userKey)
            return cached
        }
        let admitted = Mutex(false)
        do {
            let key = try await keys.key(for: userKey) {
                try limiter.acquire(client)
                admitted.withLock { $0 = true }
            }
            if key.derived {
                DerivationTracker.current?.derived(userKey)
            } else {
                DerivationTracker.current?.used(userKey)
            }
            return key
        } catch {
            // Admitted but not run (the request was cancelled): no attempt made.
            if admitted.withLock({ $0 }) { limiter.refund(client) }
            throw error
        }
    }

    /// Runs one request's work, then settles the limiter for the derivations it made: each
    /// proven one is refunded, an unproven one stays counted until a later proof; a request
    /// failing with a wrong or unusable key that cost no derivation is counted once.
    public func settling<T>(client: String, _ body: () async throws -> T) async throws -> T {
        let tracker = DerivationTracker()
        do {
            let result = try await DerivationTracker.$current.withValue(tracker) { try await body() }
            settle(tracker, client: client)
            return result
        } catch {
            settle(tracker, client: client)
            if tracker.derivedKeys.isEmpty, let kind = ServiceError.domain(error)?.kind, kind.countsAsFailedUserKey {
                limiter.recordFailure(client)
            }
            throw error
        }
    }

    private func settle(_ tracker: DerivationTracker, client: String) {
        for key in tracker.derivedKeys {
            if keys.isProven(key) {
                limiter.refund(client)
            } else {
                pendingRefunds.charge(key, client: client)
            }
        }
        for key in tracker.usedKeys where keys.isProven(key) {
            if let charged = pendingRefunds.settle(key) { limiter.refund(charged) }
        }
    }

    /// A stable, non-reversible identifier of the user key behind a request, for history and
    /// audit: derived from the PBKDF2 key, so it is the same after a restart and on every
    /// node of the cluster, and guessing a user key from it costs a full key derivation.
    public func actor(for key: CachedKey) -> String {
        "uk:" + String(Hex.encode(OpenSSL.hmacSHA256(key: actorKey, data: key.key.identifier(label: Self.actorLabel))).prefix(12))
    }

    private static let actorLabel = Array("secureconf actor v1".utf8)

    /// A stable, non-reversible identifier of an API key, keyed like user-key actors.
    public func actor(apiKey: String) -> String {
        "ak:" + String(Hex.encode(OpenSSL.hmacSHA256(key: actorKey, data: Array("api-key|\(apiKey)".utf8))).prefix(12))
    }
}

/// The user keys a request derived (cache misses), for `CredentialGate.settling`.
final class DerivationTracker: Sendable {
    @TaskLocal static var current: DerivationTracker?
    private let keys = Mutex<(derived: [String], used: [String])>(([], []))
    func derived(_ userKey: String) { keys.withLock { $0.derived.append(userKey) } }
    /// A cached key the request used (a later proof refunds its derivation's count).
    func used(_ userKey: String) { keys.withLock { if $0.used.count < 8 { $0.used.append(userKey) } } }
    var derivedKeys: [String] { keys.withLock { $0.derived } }
    var usedKeys: [String] { keys.withLock { $0.used } }
}

/// Derivations counted as failures until their key is proven, by a keyed hash of the user key
/// (never the key): bounded, oldest dropped.
final class PendingRefunds: Sendable {
    private let state = Mutex<(clients: [String: String], order: [String])>(([:], []))
    private let hashKey = OpenSSL.randomBytes(32)
    static let capacity = 10_000

    private func id(_ userKey: String) -> String { Hex.encode(OpenSSL.hmacSHA256(key: hashKey, data: Array(userKey.utf8)).prefix(16)) }

    func charge(_ userKey: String, client: String) {
        let k = id(userKey)
        state.withLock { s in
            if s.clients[k] == nil { s.order.append(k) }
            s.clients[k] = client
            while s.order.count > Self.capacity {
                s.clients[s.order.removeFirst()] = nil
            }
        }
    }

    /// The client charged for this key's derivation, once.
    func settle(_ userKey: String) -> String? {
        let k = id(userKey)
        return state.withLock { s in s.clients.removeValue(forKey: k) }
    }
}
