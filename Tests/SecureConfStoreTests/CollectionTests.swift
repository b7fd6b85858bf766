import Foundation
import GRDB
import Testing

@testable import SecureConfStore

/// Tombstone collection (`OSC_TOMBSTONE_HORIZON`) in the store: what leaves, what is never
/// taken back, what reads say afterwards.
@Suite struct CollectionTests {
    let directory = temporaryDirectory()

    func open(_ name: String = "a", node: String = "a:1") throws -> ConfigStore {
        try ConfigStore(configuration: .init(path: directory + "/\(name).db", nodeID: node))
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }

    /// Writes, updates and deletes `key`; returns the tombstone as collectable.
    func deleted(_ store: ConfigStore, key: String = "k") async throws -> CollectableTombstone {
        _ = try await store.create(environment: "e", key: key, category: nil, ciphertext: "v1")
        _ = try await store.update(environment: "e", key: key, category: nil, ciphertext: "v2") { _ in true }
        try await store.delete(environment: "e", key: key) { _ in true }
        let all = try await store.collectableTombstones(deletedBeforeMicros: Self.now() + 1_000_000, origin: nil, limit: 100)
        return try #require(all.first { $0.marker.key == key })
    }

    /// Every revision of (e, key) as a peer would send it.
    func revisions(_ store: ConfigStore, key: String = "k") async throws -> [Revision] {
        try #require(try await store.history(environment: "e", key: key)).versions.map(\.revision)
    }

    @Test func collectingRemovesTheKeyAndItsHistoryAndReadsSaySo() async throws {
        let store = try open()
        let tombstone = try await deleted(store)
        _ = try await store.create(environment: "e", key: "kept", category: nil, ciphertext: "x")
        let feedHead = try await store.lastChangeSeq()
        let outcome = try await store.collect([tombstone.marker])
        #expect(outcome.keys == 1 && outcome.revisions == 3)
        #expect(try await store.all(tenant: Revision.defaultTenant, includeDeleted: true).map(\.key) == ["kept"])
        await #expect(throws: StoreError.collected(environment: "e", key: "k")) { try await store.history(environment: "e", key: "k") }
        await #expect(throws: StoreError.collected(environment: "e", key: "k")) { try await store.version(1, environment: "e", key: "k") }
        let (past, _) = try await store.pastState(environment: "e", key: "k", atOrBeforeMicros: tombstone.marker.deletedAt - 1)
        #expect(past == .collected)
        #expect(store.liveEntryCount == 1)
        // The change feed cannot replay what left: a resume below it is told to re-read.
        #expect(try await store.changeFeedHorizon() >= tombstone.seq && tombstone.seq <= feedHead)
        let digest = try await store.digest()
        #expect(digest == (try await store.recomputedDigest()))
        #expect(digest.revisions == 1 && digest.collectedKeys == 1)
        #expect(try await store.collectedMarker(EntryName(environment: "e", key: "k")) == tombstone.marker)
    }

    @Test func noCopyOfACollectedRevisionIsTakenBackButANewerWriteIs() async throws {
        let a = try open("a", node: "a:1")
        let tombstone = try await deleted(a)
        let copies = try await revisions(a)
        _ = try await a.collect([tombstone.marker])
        // A peer that still holds the key (or only its older values) offers them again.
        let outcome = try await a.apply(batch: copies, pruned: [])
        #expect(outcome.applied == 0)
        let older = Array(copies.prefix(2))
        #expect(try await a.apply(batch: older, pruned: []).applied == 0)
        #expect(try await a.entry(environment: "e", key: "k") == nil)
        #expect(try await a.digest().revisions == 0)
        // A write after the delete (a key made again) is a new key.
        var again = copies[0]
        again.hlc = tombstone.marker.hlc + 1
        again.origin = "b:1"
        again.ciphertext = "v3"
        #expect(try await a.apply(batch: [again], pruned: []).applied == 1)
        #expect(try await a.entry(environment: "e", key: "k")?.ciphertext == "v3")
        #expect(try await a.history(environment: "e", key: "k")?.versions.map(\.version) == [1])
        // Still created locally after collection too.
        let b = try open("b", node: "b:1")
        let t = try await deleted(b, key: "z")
        _ = try await b.collect([t.marker])
        let made = try await b.create(environment: "e", key: "z", category: nil, ciphertext: "new")
        #expect(made.hlc > t.marker.hlc)
    }

    @Test func aTombstoneNoLongerCurrentIsNotCollected() async throws {
        let store = try open()
        let tombstone = try await deleted(store)
        _ = try await store.create(environment: "e", key: "k", category: nil, ciphertext: "back")
        let outcome = try await store.collect([tombstone.marker])
        #expect(outcome.keys == 0)
        #expect(try await store.entry(environment: "e", key: "k")?.ciphertext == "back")
        #expect(try await store.history(environment: "e", key: "k")?.versions.count == 4)
    }

    @Test func aPeersMarkerRemovesAStaleLiveCopyButNotAValueItNames() async throws {
        let a = try open("a", node: "a:1")
        let b = try open("b", node: "b:1")
        // b received the values but never the delete.
        _ = try await a.create(environment: "e", key: "k", category: nil, ciphertext: "v1")
        _ = try await b.apply(batch: try await revisions(a), pruned: [])
        try await a.delete(environment: "e", key: "k") { _ in true }
        let tombstone = try #require(try await a.collectableTombstones(deletedBeforeMicros: Self.now() + 1_000_000, origin: "a:1", limit: 10).first)
        _ = try await a.collect([tombstone.marker])
        #expect(b.liveEntryCount == 1)
        let outcome = try await b.applyCollected(try await a.collectedMarkers(after: nil, limit: 10))
        #expect(outcome.keys == 1 && outcome.refused == 0)
        #expect(try await b.entry(environment: "e", key: "k") == nil)
        #expect(b.liveEntryCount == 0)
        #expect(try await b.digest() == (try await a.digest()))
        // A marker naming a revision this node holds as a value is refused, and nothing changes.
        let c = try open("c", node: "c:1")
        let live = try await c.create(environment: "e", key: "q", category: nil, ciphertext: "v")
        let forged = CollectedMarker(environment: "e", key: "q", hlc: live.hlc, origin: "c:1", deletedAt: live.updatedAt, collectedAt: Self.now())
        #expect(try await c.applyCollected([forged]).refused == 1)
        #expect(try await c.entry(environment: "e", key: "q")?.ciphertext == "v")
        #expect(try await c.digest().collectedKeys == 0)
    }

    @Test func markersExpireAndTheDigestFollows() async throws {
        let store = try open()
        let t1 = try await deleted(store, key: "k1")
        let t2 = try await deleted(store, key: "k2")
        _ = try await store.collect([t1.marker, t2.marker])
        // t2 collected later (by a node that took it back in between, say): it lasts longer.
        var later = t2.marker
        later.collectedAt += 10_000_000
        #expect(try await store.applyCollected([later]).keys == 0, "the same marker again collects nothing")
        #expect(try await store.expireCollected(collectedBeforeMicros: t1.marker.collectedAt + 1_000_000) == 1)
        let digest = try await store.digest()
        #expect(digest.collectedKeys == 1)
        #expect(digest == (try await store.recomputedDigest()))
        #expect(try await store.collectedMarkers(after: nil, limit: 10).map(\.key) == ["k2"])
        #expect(try await store.collectedMarkers(after: ("e", "k2"), limit: 10).isEmpty)
        // Expired: the key is simply unknown now.
        #expect(try await store.history(environment: "e", key: "k1") == nil)
    }

    @Test func onlyOldDeletedConfigurationIsCollectable() async throws {
        let store = try open()
        _ = try await store.create(environment: "e", key: "live", category: nil, ciphertext: "v")
        _ = try await store.create(environment: EntryNames.identityEnvironment, key: "user", category: nil, ciphertext: "v")
        try await store.delete(environment: EntryNames.identityEnvironment, key: "user") { _ in true }
        let before = Self.now()
        let t = try await deleted(store)
        #expect(try await store.collectableTombstones(deletedBeforeMicros: before, origin: nil, limit: 10).isEmpty)
        let all = try await store.collectableTombstones(deletedBeforeMicros: Self.now() + 1_000_000, origin: nil, limit: 10)
        #expect(all.map(\.marker.key) == [t.marker.key] && all.map(\.seq) == [t.seq], "users and tokens are never collected")
        #expect(try await store.collectableTombstones(deletedBeforeMicros: Self.now() + 1_000_000, origin: "b:1", limit: 10).isEmpty)
    }

    @Test func aRefillSetsEverythingAsideAndTakesPeersCopiesBack() async throws {
        let a = try open("a", node: "a:1")
        _ = try await a.create(environment: "e", key: "k", category: nil, ciphertext: "v1")
        _ = try await a.create(environment: "e", key: "gone", category: nil, ciphertext: "g")
        try await a.delete(environment: "e", key: "gone") { _ in true }
        let copies = try await revisions(a)
        let moved = try await a.setAsideAllForRejoin(reason: "test", keepingOwnSinceMicros: .max)
        #expect(moved == 3)
        #expect(a.liveEntryCount == 0)
        #expect(try await a.entry(environment: "e", key: "k") == nil)
        #expect(try await a.digest().revisions == 0)
        #expect(try await a.setAsideCount() == 3)
        #expect(try await a.changeFeedHorizon() >= 3)
        // Not refused: the peers' copies come back.
        #expect(try await a.apply(batch: copies, pruned: []).applied == 1)
        #expect(try await a.entry(environment: "e", key: "k")?.ciphertext == "v1")
        #expect(a.liveEntryCount == 1)
    }

    @Test func aRefillKeepsThisNodesOwnRecentWritesAndSetsTheRestAside() async throws {
        let a = try open("a", node: "a:1")
        let b = try open("b", node: "b:1")
        _ = try await b.create(environment: "e", key: "from-b", category: nil, ciphertext: "b")
        _ = try await a.apply(batch: try await revisions(b, key: "from-b"), pruned: [])
        _ = try await a.create(environment: "e", key: "old", category: nil, ciphertext: "o")
        let since = Self.now()
        _ = try await a.create(environment: "e", key: "recent", category: nil, ciphertext: "r")
        _ = try await a.update(environment: "e", key: "old", category: nil, ciphertext: "o2") { _ in true }
        #expect(try await a.setAsideAllForRejoin(reason: "test", keepingOwnSinceMicros: since) == 2)
        #expect(try await a.all(tenant: Revision.defaultTenant).map(\.key).sorted() == ["old", "recent"])
        #expect(try await a.entry(environment: "e", key: "old")?.ciphertext == "o2")
        #expect(try await a.history(environment: "e", key: "old")?.versions.count == 1)
        #expect(a.liveEntryCount == 2)
        #expect(try await a.digest() == (try await a.recomputedDigest()))
        // What stays is still this node's outbox: it ships.
        #expect(try await a.ownRevisions(after: 0, limit: 10).map(\.revision.key).sorted() == ["old", "recent"])
    }
}
