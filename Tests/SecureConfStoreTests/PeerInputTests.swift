import Foundation
import GRDB
import SecureConfCrypto
import Testing

@testable import SecureConfStore

/// What the store and the revision rules do with hostile peer input (the security review's
/// findings 1, 3 and 10, at the unit level; tests/cluster/test_security.py drives them
/// through real nodes).
@Suite struct PeerInputTests {
    let directory = temporaryDirectory()

    @Test func theClockSaturatesAndNeverJumpsPastItsBound() {
        let clock = HybridLogicalClock(startingAfter: Int64.max, maxAheadMillis: 5000, wallClockMillis: { 1_000_000 })
        #expect(clock.now() <= clock.ceiling(), "a stored Int64.max does not drag the clock")
        #expect(!clock.observe(Int64.max), "a far-future stamp is not observed")
        #expect(clock.observe((1_004_000 << 16)), "a stamp within the bound is")
        #expect(clock.stamp(after: Int64.max) == Int64.max, "saturates, never traps")
        #expect(clock.now() == Int64.max)
    }

    @Test func storedStampsBeyondTheBoundAreSetAsideAtStart() async throws {
        let path = directory + "/future.db"
        let store = try ConfigStore(configuration: .init(path: path, nodeID: "a:1"))
        let good = try await store.create(environment: "default", key: "k", category: nil, ciphertext: "v1")
        await store.close()
        // What a hostile peer could store before the checks existed: an Int64.max stamp.
        try await DatabaseQueue(path: path).write { db in
            try ConfigStore.insertRevision(
                Revision(
                    environment: "default",
                    key: "k",
                    category: nil,
                    ciphertext: "evil",
                    hlc: Int64.max,
                    origin: "b:1",
                    deleted: false,
                    createdAt: 1,
                    updatedAt: 1
                ),
                db: db
            )
            try db.execute(sql: "UPDATE entries SET ciphertext = 'evil', hlc = ?, origin = 'b:1'", arguments: [Int64.max])
        }
        let reopened = try ConfigStore(configuration: .init(path: path, nodeID: "a:1"))
        #expect(reopened.setAsideAtStart == 1)
        #expect(try await reopened.entry(environment: "default", key: "k")?.ciphertext == "v1", "the honest value is current again")
        #expect(try await reopened.setAsideCount() == 1)
        let next = try await reopened.update(environment: "default", key: "k", category: nil, ciphertext: "v2") { _ in true }
        #expect(next.hlc > good.hlc && next.hlc < Int64.max / 2, "writes go on with sane stamps")
        #expect(try await reopened.digest() == (try await reopened.recomputedDigest()))
    }

    @Test func applyRefusesStampsBeyondTheBound() async throws {
        let store = try ConfigStore(configuration: .init(path: directory + "/apply.db", nodeID: "a:1"))
        await #expect(throws: StoreError.self) {
            try await store.apply(batch: [
                Revision(
                    environment: "default",
                    key: "k",
                    category: nil,
                    ciphertext: "x",
                    hlc: Int64.max,
                    origin: "b:1",
                    deleted: false,
                    createdAt: 1,
                    updatedAt: 1
                )
            ])
        }
        #expect(store.clock.now() < Int64.max / 2)
        #expect(try await store.digest().revisions == 0)
    }

    @Test func twoContentsOfOneIdentityConvergeOnTheLowerHash() async throws {
        let a = try ConfigStore(configuration: .init(path: directory + "/twin-a.db", nodeID: "a:1"))
        let b = try ConfigStore(configuration: .init(path: directory + "/twin-b.db", nodeID: "b:1"))
        let one = Revision(
            environment: "default",
            key: "k",
            category: nil,
            ciphertext: "one",
            hlc: 100 << 16,
            origin: "c:1",
            deleted: false,
            createdAt: 1,
            updatedAt: 1
        )
        var two = one
        two.ciphertext = "two"
        _ = try await a.apply(batch: [one])
        _ = try await b.apply(batch: [two])
        #expect(try await a.digest() != (try await b.digest()), "the digest sees the difference (ids alone would not)")
        let ab = try await a.apply(batch: try await b.revisions(ids: try await b.revisionIDs(bucket: two.id.identity.bucket)))
        let ba = try await b.apply(batch: try await a.revisions(ids: try await a.revisionIDs(bucket: one.id.identity.bucket)))
        #expect(ab.identityConflicts + ba.identityConflicts >= 1)
        #expect(try await a.digest() == (try await b.digest()))
        let kept = RevisionDigest.contentHash(one).lexicographicallyPrecedes(RevisionDigest.contentHash(two)) ? "one" : "two"
        #expect(try await a.entry(environment: "default", key: "k")?.ciphertext == kept)
        #expect(try await b.entry(environment: "default", key: "k")?.ciphertext == kept)
    }

    @Test func revisionRulesBoundEveryField() throws {
        let now: Int64 = 1_750_000_000_000
        var rules = RevisionRules(maxAheadMillis: 5000, maxCiphertextBytes: 4096)
        rules.wallClockMillis = { now }
        var raw = [UInt8](repeating: 7, count: 32)
        let key = DerivedKey(consuming: &raw)
        let token = Fernet.encrypt(Array(#""v""#.utf8), key: key, now: Date(timeIntervalSince1970: Double(now / 1000)))
        let good = Revision(
            environment: "default",
            key: "k",
            category: nil,
            ciphertext: token,
            hlc: now << 16,
            origin: "127.0.0.1:9001",
            deleted: false,
            createdAt: now * 1000,
            updatedAt: now * 1000
        )
        try rules.check(good)
        func refused(_ change: (inout Revision) -> Void) -> RevisionRules.Refusal? {
            var r = good
            change(&r)
            do { try rules.check(r) } catch { return error }
            return nil
        }
        #expect(refused { $0.hlc = Int64.max } == .ahead(seconds: Double((Int64.max >> 16) - now) / 1000))
        #expect(refused { $0.hlc = -1 } != nil)
        #expect(refused { $0.ciphertext = "garbage" } != nil)
        #expect(refused { $0.key = "e" + String(repeating: "\u{301}", count: 300) } != nil, "limits count scalars, not graphemes")
        #expect(refused { $0.category = "a\u{7}" } != nil)
        #expect(refused { $0.tenant = "acme" } != nil)
        #expect(refused { $0.deleted = true } != nil, "a tombstone carries no ciphertext")
        #expect(refused { $0.actor = "root" } != nil)
        #expect(refused { $0.origin = "not a node" } != nil)
        // A pruned revision's marker: names, origin and stamp within bounds.
        let marker = PrunedMarker(environment: "default", key: "k", hlc: now << 16, origin: "127.0.0.1:9001", deleted: false)
        try rules.check(marker)
        for bad in [
            PrunedMarker(environment: "a\u{7}", key: "k", hlc: 5, origin: "127.0.0.1:9001", deleted: false),
            PrunedMarker(environment: "default", key: "a/b", hlc: 5, origin: "127.0.0.1:9001", deleted: false),
            PrunedMarker(environment: "default", key: "k", hlc: 0, origin: "127.0.0.1:9001", deleted: false),
            PrunedMarker(environment: "default", key: "k", hlc: Int64.max, origin: "127.0.0.1:9001", deleted: false),
            PrunedMarker(environment: "default", key: "k", hlc: 5, origin: "nowhere", deleted: false),
        ] {
            #expect(throws: RevisionRules.Refusal.self) { try rules.check(bad) }
        }
        // A purge bound names an earlier revision of a value (not a delete, not a user's record).
        #expect(refused { $0.purgesThrough = RevisionStamp(hlc: (now << 16) - 1, origin: "127.0.0.1:9002") } == nil)
        #expect(refused { $0.purgesThrough = RevisionStamp(hlc: now << 16, origin: "127.0.0.1:9002") } != nil, "not after itself")
        #expect(refused { $0.purgesThrough = RevisionStamp(hlc: 0, origin: "127.0.0.1:9002") } != nil)
        #expect(refused { $0.purgesThrough = RevisionStamp(hlc: 5, origin: "nowhere") } != nil)
        #expect(
            refused {
                $0.purgesThrough = RevisionStamp(hlc: 5, origin: "127.0.0.1:9002"); $0.environment = EntryNames.identityEnvironment
            } != nil
        )
        #expect(
            refused {
                $0.purgesThrough = RevisionStamp(hlc: 5, origin: "127.0.0.1:9002"); $0.deleted = true; $0.ciphertext = ""
            } != nil
        )
        #expect(
            refused {
                $0.hlc = (now + 3_600_000) << 16; $0.updatedAt = (now + 3_600_000) * 1000; $0.createdAt = $0.updatedAt
            }
            .map { if case .ahead = $0 { true } else { false } } == true
        )
        // A replay: the old token with a fresh stamp, an hour later.
        rules.wallClockMillis = { now + 3_600_000 }
        #expect(
            refused {
                $0.hlc = (now + 3_600_000) << 16; $0.updatedAt = (now + 3_600_000) * 1000
            } != nil
        )
    }
}

extension RevisionIdentity {
    var bucket: Int { RevisionDigest.bucket(tenant: tenant, environment: environment, key: key) }
}

@Suite struct WALRecoveryTests {
    let directory = temporaryDirectory()

    @Test func fewerRecoveredFramesThanTheLogHeldAreReported() async throws {
        let path = directory + "/live.db"
        let store = try ConfigStore(configuration: .init(path: path, nodeID: "a:1"))
        for i in 0..<20 { _ = try await store.create(environment: "default", key: "k\(i)", category: nil, ciphertext: "v\(i)") }
        // A copy of the files as an unclean stop leaves them: the WAL not yet checkpointed.
        let copy = directory + "/crashed.db"
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        try FileManager.default.copyItem(atPath: path + "-wal", toPath: copy + "-wal")
        let frames = WALRecovery.frames(inWALAt: copy + "-wal")
        #expect(frames > 4)
        // Damage a frame in the middle: SQLite stops recovering at the first bad checksum.
        let handle = try #require(FileHandle(forUpdatingAtPath: copy + "-wal"))
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: size / 2)
        try handle.write(contentsOf: Data(repeating: 0xA5, count: 64))
        try handle.close()
        let reopened = try ConfigStore(configuration: .init(path: copy, nodeID: "a:1"))
        #expect(reopened.walFramesNotRecovered > 0, "the lost frames are reported")
        let intact = try ConfigStore(configuration: .init(path: directory + "/fresh.db", nodeID: "a:1"))
        #expect(intact.walFramesNotRecovered == 0)
        await store.close()
    }
}
