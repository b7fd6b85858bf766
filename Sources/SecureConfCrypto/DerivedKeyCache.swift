import CSecureConfKDF
import Foundation
import Synchronization

/// The derivation pool and queue are full: the caller should answer 503 with `Retry-After`.
public struct KeyDerivationOverloaded: Error, CustomStringConvertible {
    public let retryAfterSeconds: Int
    public var description: String { "key derivation capacity exhausted; retry in \(retryAfterSeconds) s" }
}

/// Receives the cache's events (the server turns them into Prometheus metrics).
public protocol DerivedKeyCacheObserver: Sendable {
    func cacheHit()
    func cacheMiss()
    func derivationFinished(seconds: Double)
    func derivationRefused()
}

/// Where a derived key sits in the cache: HMAC-SHA256 of the user key under a random
/// per-process key, so the user key itself is never a dictionary key or held in memory.
public struct CacheIndex: Hashable, Sendable {
    let a: UInt64, b: UInt64, c: UInt64, d: UInt64
    init(_ mac: [UInt8]) {
        func word(_ i: Int) -> UInt64 { mac[i..<(i + 8)].reduce(0) { ($0 << 8) | UInt64($1) } }
        a = word(0); b = word(8); c = word(16); d = word(24)
    }
}

/// A key handed out by the cache, with where it came from.
public struct CachedKey: Sendable {
    public let key: DerivedKey
    public let index: CacheIndex
    /// true when this request started the PBKDF2 run (a request that joined another's is not).
    public let derived: Bool
}

/// Bounded LRU + TTL cache of PBKDF2-derived keys with single-flight derivation on a
/// bounded thread pool.
///
/// A freshly derived key is *provisional* until something proves it right (it decrypted
/// a stored token, or the caller wrote with it). A provisional key that fails to
/// authenticate a token is dropped, and provisional keys are evicted before proven ones,
/// so a flood of wrong keys cannot push out the keys of real users.
public final class DerivedKeyCache: Sendable {
    public struct Configuration: Sendable {
        public var capacity: Int
        public var ttlSeconds: Double
        public var maxConcurrentDerivations: Int
        public var maxQueuedDerivations: Int
        public var iterations: UInt32

        public init(
            capacity: Int = 1024,
            ttlSeconds: Double = 300,
            maxConcurrentDerivations: Int = max(1, ProcessInfo.processInfo.activeProcessorCount),
            maxQueuedDerivations: Int = 64,
            iterations: UInt32 = PBKDF2.defaultIterations
        ) {
            self.capacity = capacity
            self.ttlSeconds = ttlSeconds
            self.maxConcurrentDerivations = maxConcurrentDerivations
            self.maxQueuedDerivations = maxQueuedDerivations
            self.iterations = iterations
        }
    }

    private struct Entry {
        let key: DerivedKey
        let expires: ContinuousClock.Instant
        var lastUse: UInt64
        var proven: Bool
    }

    private struct State {
        var entries: [CacheIndex: Entry] = [:]
        var inflight: [CacheIndex: Task<DerivedKey, any Error>] = [:]
        var tick: UInt64 = 0
    }

    public let configuration: Configuration
    private let salt: [UInt8]
    private let indexKey: [UInt8]
    private let state = Mutex(State())
    private let pool: BlockingWorkPool
    /// One-off derivations running or queued (`deriveOnce`).
    private let oneOff = Mutex(0)
    private let observer: (any DerivedKeyCacheObserver)?

    public init(salt: [UInt8], configuration: Configuration = .init(), observer: (any DerivedKeyCacheObserver)? = nil) {
        self.salt = salt
        self.configuration = configuration
        self.indexKey = OpenSSL.randomBytes(32)
        self.observer = observer
        self.pool = BlockingWorkPool(threads: max(1, configuration.maxConcurrentDerivations), name: "secureconf-kdf")
    }

    deinit {
        pool.shutdown()
    }

    /// Stops the derivation threads once the queued derivations are done; later requests fail.
    public func shutdown() async {
        pool.shutdown()
    }

    public var count: Int { state.withLock { $0.entries.count } }

    public func index(for userKey: String) -> CacheIndex {
        CacheIndex(OpenSSL.hmacSHA256(key: indexKey, data: Array(userKey.utf8)))
    }

    /// The cached key for `userKey`, if there is a fresh one (no derivation).
    public func cachedKey(for userKey: String) -> CachedKey? {
        let index = index(for: userKey)
        let now = ContinuousClock.now
        let key: DerivedKey? = state.withLock { s in
            guard var entry = s.entries[index], entry.expires > now else { return nil }
            s.tick &+= 1
            entry.lastUse = s.tick
            s.entries[index] = entry
            return entry.key
        }
        guard let key else { return nil }
        observer?.cacheHit()
        return CachedKey(key: key, index: index, derived: false)
    }

    /// One PBKDF2-HMAC-SHA256 derivation that is not cached (a backup's password with the
    /// backup's own salt), on the same threads as user keys and bounded like them.
    public func deriveOnce(password: [UInt8], salt: [UInt8], iterations: UInt32) async throws -> DerivedKey {
        try await runBounded {
            var bytes = PBKDF2.sha256(password: password, salt: salt, iterations: iterations)
            return DerivedKey(consuming: &bytes)
        }
    }

    /// Runs other CPU-heavy work that is not cached (a password hash) on the derivation
    /// threads, admitted like `deriveOnce`: beyond the queue, `KeyDerivationOverloaded`.
    public func runBounded<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let admitted = oneOff.withLock { running in
            guard running < configuration.maxQueuedDerivations else { return false }
            running += 1
            return true
        }
        guard admitted else {
            observer?.derivationRefused()
            throw KeyDerivationOverloaded(retryAfterSeconds: 1)
        }
        defer { oneOff.withLock { $0 -= 1 } }
        return try await pool.run {
            sc_lower_thread_priority()
            return try body()
        }
    }

    /// The derived key for `userKey`, from the cache or from one shared derivation.
    ///
    /// `admit` runs, under the cache's lock, only when this call would start a derivation
    /// (a miss with none in flight for the key); what it throws refuses the call. Requests
    /// that join a derivation in flight pay nothing: the one that started it was admitted.
    public func key(for userKey: String, admit: () throws -> Void = {}) async throws -> CachedKey {
        let index = index(for: userKey)
        enum Step {
            case hit(DerivedKey)
            case join(Task<DerivedKey, any Error>, started: Bool)
            case refused
            case denied(any Error)
        }
        let now = ContinuousClock.now
        let limit = configuration.maxConcurrentDerivations + configuration.maxQueuedDerivations
        let step: Step = state.withLock { s in
            s.tick &+= 1
            if var entry = s.entries[index] {
                if entry.expires > now {
                    entry.lastUse = s.tick
                    s.entries[index] = entry
                    return .hit(entry.key)
                }
                s.entries[index] = nil
            }
            if let task = s.inflight[index] { return .join(task, started: false) }
            guard s.inflight.count < limit else { return .refused }
            do { try admit() } catch { return .denied(error) }
            let password = Array(userKey.utf8)
            let task = Task { [pool, salt, configuration] in
                try await pool.run {
                    // Derivations yield the CPU to request handling (a nicer thread priority).
                    sc_lower_thread_priority()
                    var bytes = PBKDF2.sha256(password: password, salt: salt, iterations: configuration.iterations)
                    return DerivedKey(consuming: &bytes)
                }
            }
            s.inflight[index] = task
            return .join(task, started: true)
        }
        switch step {
        case .hit(let key):
            observer?.cacheHit()
            return CachedKey(key: key, index: index, derived: false)
        case .refused:
            observer?.derivationRefused()
            throw KeyDerivationOverloaded(retryAfterSeconds: 1)
        case .denied(let error):
            throw error
        case .join(let task, let startedHere):
            observer?.cacheMiss()
            let started = ContinuousClock.now
            let result = await task.result
            // The first waiter to wake ends the flight and caches the key in one step, so no
            // waiter returns (and proves the key) before its entry exists.
            let ranHere: Bool = state.withLock { s in
                guard let current = s.inflight[index], current == task else { return false }
                s.inflight[index] = nil
                if case .success(let key) = result { insert(key, at: index, into: &s) }
                return true
            }
            let key: DerivedKey
            switch result {
            case .failure(let error): throw error
            case .success(let k): key = k
            }
            if ranHere {
                let elapsed = ContinuousClock.now - started
                observer?.derivationFinished(seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            }
            return CachedKey(key: key, index: index, derived: startedHere)
        }
    }

    private func insert(_ key: DerivedKey, at index: CacheIndex, into s: inout State) {
        let capacity = configuration.capacity
        guard capacity > 0 else { return }
        let expires = ContinuousClock.now.advanced(by: .milliseconds(Int64(configuration.ttlSeconds * 1000)))
        do {
            if s.entries[index] == nil, s.entries.count >= capacity {
                // Evict the least recently used provisional key, else the least recently used key.
                var victim: (CacheIndex, Bool, UInt64)?
                for (i, e) in s.entries {
                    if let v = victim {
                        if (!e.proven && v.1) || (e.proven == v.1 && e.lastUse < v.2) { victim = (i, e.proven, e.lastUse) }
                    } else {
                        victim = (i, e.proven, e.lastUse)
                    }
                }
                if let v = victim { s.entries[v.0] = nil }
            }
            s.tick &+= 1
            s.entries[index] = Entry(key: key, expires: expires, lastUse: s.tick, proven: false)
        }
    }

    /// The key at `index` decrypted a stored token or was used to write: keep it.
    public func markProven(_ index: CacheIndex) {
        state.withLock { s in s.entries[index]?.proven = true }
    }

    /// The key at `index` failed to authenticate a stored token: drop it unless proven.
    public func reportFailure(_ index: CacheIndex) {
        state.withLock { s in
            if let e = s.entries[index], !e.proven { s.entries[index] = nil }
        }
    }

    /// Whether the cache holds a key for this user key (tests).
    public func contains(_ userKey: String) -> Bool {
        let i = index(for: userKey)
        return state.withLock { $0.entries[i] != nil }
    }

    public func isProven(_ userKey: String) -> Bool {
        let i = index(for: userKey)
        return state.withLock { $0.entries[i]?.proven ?? false }
    }
}

extension CacheIndex {
    /// Hex of the index (a keyed hash of the user key): safe to log or store as an actor id.
    public var hashValueHex: String {
        [a, b].map { word in
            let s = String(word, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }.joined()
    }
}
