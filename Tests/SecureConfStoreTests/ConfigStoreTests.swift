import Foundation
import GRDB
import Testing

@testable import SecureConfStore

func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "secureconf-test-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite struct ConfigStoreTests {
    let directory = temporaryDirectory()
    var path: String { directory + "/store.db" }

    func open(node: String = "127.0.0.1:9001") throws -> ConfigStore {
        try ConfigStore(configuration: .init(path: path, nodeID: node))
    }

    @Test func migrationsCreateTheSchemaAndTheFileIsPrivate() throws {
        _ = try open()
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let queue = try DatabaseQueue(path: path)
        let tables = try queue.read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") }
        #expect(tables.contains("revisions") && tables.contains("entries") && tables.contains("meta") && tables.contains("counters"))
        let migrations = try queue.read { try String.fetchAll($0, sql: "SELECT identifier FROM grdb_migrations") }
        #expect(
            migrations == [
                "v1-revisions-entries-meta", "v2-replication-digest-cursors", "v2-history-retention-audit", "v3-content-hash-set-aside-typed-audit",
                "v4-change-feed-horizon", "v5-purging-revisions", "v6-entries-by-environment", "v7-collected-keys",
            ]
        )
        let mode = try queue.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") }
        #expect(mode == "wal")
    }

    /// A list page reads its rows in order from an index: no sort of the whole environment per
    /// page (which made a page cost 80 ms at 100,000 entries), for each form the list takes.
    @Test func aListPageIsReadInIndexOrderWithoutSortingTheEnvironment() async throws {
        let store = try open()
        for i in 0..<50 { _ = try await store.create(environment: "prod", key: "k\(i)", category: i % 2 == 0 ? "a" : nil, ciphertext: "t") }
        let page = try await store.list(environment: "prod", category: nil, limit: 10, afterID: 20)
        #expect(page.map(\.id) == Array(21...30))
        let queue = try DatabaseQueue(path: path)
        let plan = try await queue.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "EXPLAIN QUERY PLAN SELECT \(ConfigEntry.columns) FROM entries WHERE deleted = 0 AND environment = ? AND id > ? ORDER BY id LIMIT ? OFFSET ?",
                arguments: ["prod", 20, 10, 0]
            ).map { $0["detail"] as String }
        }
        #expect(!plan.contains { $0.contains("TEMP B-TREE") }, "no sort: \(plan)")
        #expect(plan.contains { $0.contains("entries_by_environment") }, "\(plan)")
        await store.close()
    }

    @Test func theRecordModelIsTheSchemasColumns() throws {
        _ = try open()
        let queue = try DatabaseQueue(path: path)
        func columns(_ table: String) throws -> [String] {
            try queue.read { try String.fetchAll($0, sql: "SELECT name FROM pragma_table_info(?)", arguments: [table]) }
        }
        let revision = Revision.Columns.allCases.map(\.rawValue)
        #expect(Set(revision).isSubset(of: try columns("revisions")), "every revision column is in revisions")
        #expect(Set(revision).isSubset(of: try columns("set_aside_revisions")), "and in set_aside_revisions")
        #expect(
            try columns("entries") == ["id"] + revision.filter { $0 != "actor" && !$0.hasPrefix("purges_through") },
            "an entry is a revision's columns under a row id"
        )
        #expect(ConfigEntry.columns == (["id"] + revision.filter { $0 != "actor" && !$0.hasPrefix("purges_through") }).joined(separator: ", "))
    }

    @Test func tenantsKeepTheirEntriesApart() async throws {
        let store = try open()
        let acme = EntryName(tenant: "acme", environment: "prod", key: "db")
        let here = EntryName(environment: "prod", key: "db")
        _ = try await store.create(here, category: nil, ciphertext: "t-default", actor: nil, audit: nil)
        #expect(try await store.entry(acme) == nil, "the same key in another tenant is another entry")
        let created = try await store.create(acme, category: "c", ciphertext: "t-acme", actor: nil, audit: nil)
        #expect(created.tenant == "acme" && created.environment == "prod")
        #expect(try await store.entry(acme)?.ciphertext == "t-acme")
        #expect(try await store.entry(here)?.ciphertext == "t-default")
        _ = try await store.create(EntryName(tenant: "acme2", environment: "prod", key: "x"), category: nil, ciphertext: "t2", actor: nil, audit: nil)
        let defaults = try await store.all(tenant: Revision.defaultTenant)
        #expect(defaults.map(\.ciphertext) == ["t-default"], "other tenants are in no default listing")
        let acmes = try await store.all(tenant: "acme")
        #expect(acmes.map(\.ciphertext) == ["t-acme"] && acmes[0].tenant == "acme" && acmes[0].environment == "prod")
        #expect(try await store.all(tenant: "acme", environment: "prod").count == 1)
        #expect(try await store.history(acme)?.versions.count == 1)
        #expect(try await store.newestRevision(acme)?.environment == TenantNames.stored(tenant: "acme", environment: "prod"))
        await #expect(throws: StoreError.unknownTenant("Not A Tenant")) {
            try await store.entry(EntryName(tenant: "Not A Tenant", environment: "prod", key: "db"))
        }
        #expect(TenantNames.split(TenantNames.stored(tenant: "acme", environment: "a\u{2}b")) == ("acme", "a\u{2}b"))
    }

    @Test func writesAreRevisionsAndDeletesAreTombstones() async throws {
        let store = try open()
        let created = try await store.create(environment: "prod", key: "db", category: "database", ciphertext: "t1")
        #expect(created.id > 0 && !created.deleted)
        await #expect(throws: StoreError.alreadyExists(environment: "prod", key: "db")) {
            try await store.create(environment: "prod", key: "db", category: nil, ciphertext: "t1b")
        }
        _ = try await store.create(environment: "dev", key: "db", category: nil, ciphertext: "d1")
        let updated = try await store.update(environment: "prod", key: "db", category: nil, ciphertext: "t2") { $0 == "t1" }
        #expect(updated.category == "database", "a nil category keeps the current one")
        #expect(updated.createdAt == created.createdAt && updated.updatedAt >= created.updatedAt && updated.hlc > created.hlc)
        await #expect(throws: StoreError.wrongKey) {
            try await store.update(environment: "prod", key: "db", category: nil, ciphertext: "t3") { _ in false }
        }
        #expect(store.liveEntryCount == 2)
        try await store.delete(environment: "prod", key: "db") { $0 == "t2" }
        #expect(try await store.entry(environment: "prod", key: "db") == nil)
        #expect(try await store.entry(environment: "dev", key: "db")?.ciphertext == "d1")
        #expect(store.liveEntryCount == 1)
        await #expect(throws: StoreError.notFound(environment: "prod", key: "db")) {
            try await store.delete(environment: "prod", key: "db") { _ in true }
        }
        let history = try await store.revisions(environment: "prod", key: "db")
        #expect(history.map(\.ciphertext) == ["t1", "t2", ""])
        #expect(history.map(\.deleted) == [false, false, true])
        // A deleted key can be created again; history keeps growing.
        _ = try await store.create(environment: "prod", key: "db", category: nil, ciphertext: "t4")
        #expect(try await store.revisions(environment: "prod", key: "db").count == 4)
        #expect(store.liveEntryCount == 2)
    }

    @Test func listFiltersAndPages() async throws {
        let store = try open()
        for i in 0..<25 {
            _ = try await store.create(
                environment: i % 2 == 0 ? "even" : "odd",
                key: "k\(i)",
                category: i % 5 == 0 ? "five" : nil,
                ciphertext: "v\(i)"
            )
        }
        #expect(try await store.list(environment: nil, category: nil).count == 25)
        #expect(try await store.list(environment: "even", category: nil).count == 13)
        #expect(try await store.list(environment: nil, category: "five").map(\.key) == ["k0", "k5", "k10", "k15", "k20"])
        let first = try await store.list(environment: nil, category: nil, limit: 10)
        let second = try await store.list(environment: nil, category: nil, limit: 10, afterID: first.last?.id)
        let third = try await store.list(environment: nil, category: nil, limit: 10, offset: 20)
        #expect(first.count == 10 && second.count == 10 && third.count == 5)
        #expect(Set(first.map(\.key)).isDisjoint(with: second.map(\.key)))
    }

    @Test func concurrentWritesAreAllCommittedInGroups() async throws {
        let store = try open()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<500 {
                group.addTask { _ = try await store.create(environment: "default", key: "key-\(i)", category: nil, ciphertext: "v\(i)") }
            }
            // Half of these collide with each other: exactly one of each pair wins.
            for i in 0..<50 {
                group.addTask { _ = try? await store.create(environment: "default", key: "dup-\(i)", category: nil, ciphertext: "a") }
                group.addTask { _ = try? await store.create(environment: "default", key: "dup-\(i)", category: nil, ciphertext: "b") }
            }
            try await group.waitForAll()
        }
        #expect(store.liveEntryCount == 550)
        await store.close()
        let reopened = try open()
        #expect(reopened.liveEntryCount == 550)
        #expect(try await reopened.list(environment: nil, category: nil).count == 550)
        #expect(try await reopened.integrityCheck() == "ok")
    }

    @Test func replicatedRevisionsConvergeWhateverTheOrder() async throws {
        let a = try ConfigStore(configuration: .init(path: directory + "/a.db", nodeID: "node-a:1"))
        let b = try ConfigStore(configuration: .init(path: directory + "/b.db", nodeID: "node-b:1"))
        let revisions = [
            Revision(
                environment: "default",
                key: "k",
                category: nil,
                ciphertext: "x",
                hlc: 100 << 16,
                origin: "node-a:1",
                deleted: false,
                createdAt: 1,
                updatedAt: 1
            ),
            Revision(
                environment: "default",
                key: "k",
                category: nil,
                ciphertext: "y",
                hlc: 100 << 16,
                origin: "node-b:1",
                deleted: false,
                createdAt: 1,
                updatedAt: 2
            ),
            Revision(
                environment: "default",
                key: "k",
                category: nil,
                ciphertext: "",
                hlc: (101 << 16) | 1,
                origin: "node-a:1",
                deleted: true,
                createdAt: 1,
                updatedAt: 3
            ),
            Revision(
                environment: "default",
                key: "j",
                category: "c",
                ciphertext: "z",
                hlc: 99 << 16,
                origin: "node-b:1",
                deleted: false,
                createdAt: 1,
                updatedAt: 1
            ),
        ]
        for r in revisions { _ = try await a.apply(batch: [r]) }
        #expect(try await b.apply(batch: revisions.reversed()).applied == 4)
        #expect(try await a.apply(batch: [revisions[0]]).applied == 0, "a revision already known is ignored")
        for store in [a, b] {
            #expect(try await store.entry(environment: "default", key: "k") == nil, "the newest revision, a tombstone, wins")
            #expect(try await store.entry(environment: "default", key: "j")?.ciphertext == "z")
            #expect(store.liveEntryCount == 1)
            #expect(try await store.revisions(environment: "default", key: "k").map(\.ciphertext) == ["x", "y", ""])
        }
        #expect(a.clock.now() > (101 << 16) | 1, "the clock moves past what it observed")
        #expect(try await a.digest() == (try await b.digest()), "same revisions, same digest, whatever the order")
        #expect(try await a.digest().revisions == 4)
    }

    @Test func digestsFindTheDifference() async throws {
        let a = try ConfigStore(configuration: .init(path: directory + "/da.db", nodeID: "a:1"))
        let b = try ConfigStore(configuration: .init(path: directory + "/db.db", nodeID: "b:1"))
        for i in 0..<50 { _ = try await a.create(environment: "default", key: "k\(i)", category: nil, ciphertext: "v\(i)") }
        let own = try await a.ownRevisions(after: 0, limit: 1000)
        #expect(own.count == 50)
        _ = try await b.apply(batch: own.dropLast().map(\.revision))
        let da = try await a.digest()
        let db = try await b.digest()
        let differing = (0..<da.buckets.count).filter { da.buckets[$0] != db.buckets[$0] }
        #expect(differing.count == 1, "one missing revision changes one bucket")
        let missing = Set(try await a.revisionIDs(bucket: differing[0])).subtracting(try await b.revisionIDs(bucket: differing[0]))
        #expect(missing.count == 1)
        _ = try await b.apply(batch: try await a.revisions(ids: Array(missing)))
        #expect(try await a.digest() == (try await b.digest()))
        try await a.setPeerCursor("b:1", to: own[10].seq)
        #expect(try await a.peerCursor("b:1") == own[10].seq)
        #expect(try await a.outboxDepth(after: own[10].seq) == 39)
    }

    @Test func hybridLogicalClockIsMonotonic() {
        let clock = HybridLogicalClock(wallClockMillis: { 1000 })
        let first = clock.now()
        let second = clock.now()
        #expect(second == first + 1)
        clock.observe(5000 << 16)
        #expect(clock.now() > 5000 << 16)
        #expect(HybridLogicalClock.millis(of: first) == 1000)
    }
}

@Suite struct OSCDatabaseTests {
    @Test func sqlalchemyTimesParseAsUTCMicroseconds() {
        #expect(OSCDatabase.parseTime("1970-01-01 00:00:01") == 1_000_000)
        #expect(OSCDatabase.parseTime("2026-12-01 14:52:43.549925") == 1_796_136_763_549_925)
        #expect(OSCDatabase.parseTime("2026-12-01T14:52:43.5Z") == 1_796_136_763_500_000)
        #expect(OSCDatabase.parseTime("2026-12-01 14:52:43.1234567") == 1_796_136_763_123_456, "digits beyond micros are cut")
        for bad in ["", "2026-12-01", "2026-13-01 00:00:00", "2026-12-01 24:00:00", "2026-12-01 10:00:00.", "2026-12-01 10:00:00+02:00", "yesterday"]
        {
            #expect(OSCDatabase.parseTime(bad) == nil, "\(bad)")
        }
    }
}
