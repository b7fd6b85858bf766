import Foundation
import GRDB
import Synchronization
import Testing

@testable import SecureConfStore

/// The read cache answers what SQLite would: every path that changes `entries` is seen.
@Suite struct EntryCacheTests {
    let directory = temporaryDirectory()

    func open(_ name: String = "store", node: String = "127.0.0.1:9001") throws -> ConfigStore {
        try ConfigStore(configuration: .init(path: directory + "/\(name).db", nodeID: node))
    }

    /// What SQLite holds, read past the cache.
    func stored(_ store: ConfigStore, _ environment: String, _ key: String) throws -> String? {
        try store.pool.read { db in
            try String.fetchOne(
                db,
                sql: "SELECT ciphertext FROM entries WHERE environment = ? AND key = ? AND deleted = 0",
                arguments: [environment, key]
            )
        }
    }

    @Test func everyKindOfWriteIsSeenByTheNextRead() async throws {
        let store = try open()
        _ = try await store.create(environment: "prod", key: "db", category: nil, ciphertext: "t1")
        #expect(try await store.entry(environment: "prod", key: "db")?.ciphertext == "t1")
        #expect(store.entryCache.count == 1, "a read fills the cache")
        _ = try await store.update(environment: "prod", key: "db", category: nil, ciphertext: "t2") { _ in true }
        #expect(try await store.entry(environment: "prod", key: "db")?.ciphertext == "t2")
        _ = try await store.rollback(environment: "prod", key: "db", category: nil, ciphertext: "t1") { _ in true }
        #expect(try await store.entry(environment: "prod", key: "db")?.ciphertext == "t1")
        try await store.delete(environment: "prod", key: "db") { _ in true }
        #expect(try await store.entry(environment: "prod", key: "db") == nil)
        _ = try await store.create(environment: "prod", key: "db", category: nil, ciphertext: "t3")
        #expect(try await store.entry(environment: "prod", key: "db")?.ciphertext == "t3")
        // A peer's newer revision (replication), then a peer's tombstone.
        let now = ConfigStore.nowMicros()
        let theirs = Revision(
            environment: "prod",
            key: "db",
            category: nil,
            ciphertext: "peer",
            hlc: store.clock.now() + (1 << 16),
            origin: "127.0.0.1:9002",
            deleted: false,
            createdAt: now,
            updatedAt: now
        )
        #expect(try await store.apply(batch: [theirs]).applied == 1)
        #expect(try await store.entry(environment: "prod", key: "db")?.ciphertext == "peer")
        var tombstone = theirs
        tombstone.hlc += 1 << 16
        tombstone.deleted = true
        tombstone.ciphertext = ""
        #expect(try await store.apply(batch: [tombstone]).applied == 1)
        #expect(try await store.entry(environment: "prod", key: "db") == nil)
        // A restore of the environment to an earlier state.
        let recreated = try await store.create(environment: "prod", key: "db", category: nil, ciphertext: "t4")
        #expect(try await store.entry(environment: "prod", key: "db")?.ciphertext == "t4")
        try await store.restore(
            environment: "prod",
            changes: [
                PlannedRestore(
                    key: "db",
                    expectedHLC: recreated.hlc,
                    expectedOrigin: recreated.origin,
                    change: .put(category: nil, ciphertext: "t0"),
                    purgesOlder: true
                )
            ]
        )
        #expect(try await store.entry(environment: "prod", key: "db")?.ciphertext == "t0")
        #expect(try stored(store, "prod", "db") == "t0")
        await store.close()
    }

    /// Readers racing a writer: once a write returns, every read answers it or a later one,
    /// and no reader sees a key's values go backwards.
    @Test func readersRacingAWriterNeverSeeAnOlderValue() async throws {
        let store = try open()
        _ = try await store.create(environment: "e", key: "k", category: nil, ciphertext: "0")
        let acknowledged = Counter()
        let writes = 400
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for n in 1...writes {
                    _ = try await store.update(environment: "e", key: "k", category: nil, ciphertext: String(n)) { _ in true }
                    acknowledged.set(n)
                }
            }
            for _ in 0..<4 {
                group.addTask {
                    var last = 0
                    while last < writes {
                        let floor = acknowledged.value
                        let seen = Int(try await store.entry(environment: "e", key: "k")?.ciphertext ?? "") ?? -1
                        #expect(seen >= floor, "a read after write \(floor) was acknowledged answered \(seen)")
                        #expect(seen >= last, "a reader saw \(seen) after \(last)")
                        last = max(last, seen)
                        if seen < floor || seen < last { return }
                        // A cache hit does not suspend: sleep a little, so that the writer, and the
                        // other tests running in parallel, get the two-thread pool (yielding in a
                        // tight loop starved them).
                        try await Task.sleep(for: .microseconds(200))
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await store.entry(environment: "e", key: "k")?.ciphertext == String(writes))
        await store.close()
    }

    /// The window the race test once found, driven step by step: a row read from the snapshot
    /// before a commit, filled while the commit is under way (after `willCommit`, before
    /// `didCommit`), must not be cached; after the commit ends, fills are taken again.
    @Test func nothingReadWhileACommitIsUnderWayIsCached() throws {
        let cache = EntryCache(capacity: 10, maxBytes: 1 << 20)
        let name = EntryCache.Name(environment: "e", key: "k")
        func entry(_ ciphertext: String) -> ConfigEntry {
            ConfigEntry(
                id: 1,
                environment: "e",
                key: "k",
                category: nil,
                ciphertext: ciphertext,
                hlc: 1,
                origin: "n:1",
                deleted: false,
                createdAt: 1,
                updatedAt: 1
            )
        }
        let database = try DatabaseQueue()
        cache.noteChanged(1)
        try cache.databaseWillCommit()
        let during = cache.lookup(name)
        cache.fill(name, entry("old"), generation: during.generation)
        #expect(cache.lookup(name).entry == nil, "a fill while a commit is under way is refused")
        try database.inDatabase { cache.databaseDidCommit($0) }
        #expect(cache.lookup(name).entry == nil)
        cache.fill(name, entry("old"), generation: during.generation)
        #expect(cache.lookup(name).entry == nil, "a fill from before the commit ended is refused")
        let after = cache.lookup(name)
        cache.fill(name, entry("new"), generation: after.generation)
        #expect(cache.lookup(name).entry?.ciphertext == "new")
    }

    @Test func theCacheIsBoundedAndInternalEnvironmentsStayOut() async throws {
        var configuration = ConfigStore.Configuration(path: directory + "/small.db", nodeID: "127.0.0.1:9001")
        configuration.readCacheEntries = 10
        let store = try ConfigStore(configuration: configuration)
        for i in 0..<30 {
            _ = try await store.create(environment: "e", key: "k\(i)", category: nil, ciphertext: "v\(i)")
            #expect(try await store.entry(environment: "e", key: "k\(i)")?.ciphertext == "v\(i)")
        }
        #expect(store.entryCache.count == 10)
        for i in 0..<30 { #expect(try await store.entry(environment: "e", key: "k\(i)")?.ciphertext == "v\(i)") }
        _ = try await store.create(environment: "\u{1}identity", key: "user:a", category: nil, ciphertext: "u")
        let before = store.entryCache.count
        #expect(try await store.entry(environment: "\u{1}identity", key: "user:a")?.ciphertext == "u")
        #expect(store.entryCache.count <= before, "identity records are never cached")
        await store.close()
    }
}

final class Counter: Sendable {
    private let state = Mutex(0)
    var value: Int { state.withLock { $0 } }
    func set(_ n: Int) { state.withLock { $0 = n } }
}

@Suite struct TimestampTests {
    @Test func timesAreWrittenAsOpenSecureConfWritesThem() {
        #expect(Timestamp.iso8601(micros: 1_738_326_896_789_000) == "2025-01-31T12:34:56.789000Z")
        #expect(Timestamp.iso8601(micros: 0) == "1970-01-01T00:00:00.000000Z")
        #expect(Timestamp.iso8601(micros: 253_402_300_799_999_999) == "9999-12-31T23:59:59.999999Z")
        #expect(Timestamp.python(micros: 1_738_326_896_000_000) == "2025-01-31T12:34:56")
        #expect(Timestamp.python(micros: 1_738_326_896_000_042) == "2025-01-31T12:34:56.000042")
    }
}
