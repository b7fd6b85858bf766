import Foundation
import Synchronization
import Testing

@testable import SecureConfCrypto

final class CountingObserver: DerivedKeyCacheObserver {
    let counts = Mutex((hits: 0, misses: 0, derivations: 0, refused: 0))
    func cacheHit() { counts.withLock { $0.hits += 1 } }
    func cacheMiss() { counts.withLock { $0.misses += 1 } }
    func derivationFinished(seconds: Double) { counts.withLock { $0.derivations += 1 } }
    func derivationRefused() { counts.withLock { $0.refused += 1 } }
}

@Suite struct DerivedKeyCacheTests {
    let salt = OpenSSL.randomBytes(64)

    func cache(
        capacity: Int = 16,
        ttl: Double = 300,
        concurrent: Int = 2,
        queued: Int = 64,
        iterations: UInt32 = 20_000,
        observer: CountingObserver
    ) -> DerivedKeyCache {
        DerivedKeyCache(
            salt: salt,
            configuration: .init(
                capacity: capacity,
                ttlSeconds: ttl,
                maxConcurrentDerivations: concurrent,
                maxQueuedDerivations: queued,
                iterations: iterations
            ),
            observer: observer
        )
    }

    @Test func concurrentRequestsShareOneDerivation() async throws {
        let observer = CountingObserver()
        let keys = cache(observer: observer)
        let results = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<50 { group.addTask { try await keys.key(for: "shared-user-key").key.fernetKeyString } }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(results.count == 1)
        #expect(observer.counts.withLock { $0.derivations } == 1)
        let expected = PBKDF2.sha256(password: Array("shared-user-key".utf8), salt: salt, iterations: 20_000)
        #expect(results.first == Base64URL.encode(expected))
        _ = try await keys.key(for: "shared-user-key")
        #expect(observer.counts.withLock { $0.hits } >= 1)
    }

    @Test func capacityIsBoundedAndProvenKeysSurvive() async throws {
        let observer = CountingObserver()
        let keys = cache(capacity: 4, iterations: 1000, observer: observer)
        let proven = try await keys.key(for: "proven-user-key")
        keys.markProven(proven.index)
        for i in 0..<20 { _ = try await keys.key(for: "wrong-key-\(i)") }
        #expect(keys.count == 4)
        #expect(keys.contains("proven-user-key"), "a proven key is not evicted by a flood of unproven ones")
    }

    @Test func expiredKeysAreDerivedAgain() async throws {
        let observer = CountingObserver()
        let keys = cache(ttl: 0.2, iterations: 1000, observer: observer)
        _ = try await keys.key(for: "ttl-user-key")
        _ = try await keys.key(for: "ttl-user-key")
        #expect(observer.counts.withLock { $0.derivations } == 1)
        try await Task.sleep(for: .milliseconds(300))
        _ = try await keys.key(for: "ttl-user-key")
        #expect(observer.counts.withLock { $0.derivations } == 2)
    }

    @Test func failedProvisionalKeysAreDropped() async throws {
        let observer = CountingObserver()
        let keys = cache(iterations: 1000, observer: observer)
        let wrong = try await keys.key(for: "wrong-user-key")
        keys.reportFailure(wrong.index)
        #expect(!keys.contains("wrong-user-key"))
        let right = try await keys.key(for: "right-user-key")
        keys.markProven(right.index)
        keys.reportFailure(right.index)
        #expect(keys.contains("right-user-key"), "a proven key stays after failing on another user's entry")
    }

    @Test func overloadIsRefusedFast() async throws {
        let observer = CountingObserver()
        let keys = cache(concurrent: 1, queued: 1, iterations: 2_000_000, observer: observer)
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<6 {
                group.addTask {
                    do { _ = try await keys.key(for: "flood-\(i)"); return true } catch is KeyDerivationOverloaded { return false } catch {
                        return true
                    }
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { !$0 }.count >= 4, "at most one running and one queued derivation")
        #expect(observer.counts.withLock { $0.refused } >= 4)
    }

    @Test func indexIsNotTheUserKey() {
        let keys = cache(observer: CountingObserver())
        let a = keys.index(for: "user-key-one")
        let b = keys.index(for: "user-key-one")
        #expect(a == b)
        #expect(!a.hashValueHex.contains("user"))
        let other = DerivedKeyCache(salt: salt, observer: nil)
        #expect(other.index(for: "user-key-one") != a, "the index is keyed per process")
    }
}
