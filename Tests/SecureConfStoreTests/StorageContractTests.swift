import Foundation
import Logging
import PostgresNIO
import SecureConfPostgres
import Testing

@testable import SecureConfStore

/// The storage protocol's behaviour, run against every implementation: SQLite's
/// `ConfigStore` always, PostgreSQL's `PostgresStore` when `SECURECONF_TEST_POSTGRES_URL`
/// names a server whose user may create databases (scripts/test.sh starts one with
/// tests/postgres/with_server.py; each test gets a database of its own).
enum Engine: String, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgresql

    var testDescription: String { rawValue }

    static let postgresURL = ProcessInfo.processInfo.environment["SECURECONF_TEST_POSTGRES_URL"]

    /// The engines this run can test.
    static var available: [Engine] { postgresURL == nil ? [.sqlite] : allCases }

    func open(node: String = "127.0.0.1:9001", maxVersions: Int? = nil) async throws -> any ConfigStorage {
        switch self {
        case .sqlite:
            var configuration = ConfigStore.Configuration(path: temporaryDirectory() + "/store.db", nodeID: node)
            configuration.maxVersions = maxVersions
            return try ConfigStore(configuration: configuration)
        case .postgresql:
            let settings = try await Self.freshDatabase()
            var configuration = PostgresStore.Configuration(settings: settings, nodeID: node)
            configuration.maxVersions = maxVersions
            return try await PostgresStore.open(configuration, logger: Logger(label: "test"))
        }
    }

    /// A new, empty database on the test server.
    static func freshDatabase() async throws -> PostgresSettings {
        guard let url = postgresURL, case var .success(settings) = PostgresSettings.parse(url: url) else {
            throw StoreError.unavailable("SECURECONF_TEST_POSTGRES_URL is not a PostgreSQL URL")
        }
        let name = "contract_\(UUID().uuidString.prefix(8).lowercased())"
        let host = settings.hosts[0]
        let connection = try await PostgresConnection.connect(
            configuration: .init(
                host: host.name,
                port: host.port,
                username: settings.user,
                password: settings.password,
                database: settings.database,
                tls: .disable
            ),
            id: 1,
            logger: Logger(label: "test")
        )
        try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: Logger(label: "test"))
        try await connection.close()
        settings.database = name
        return settings
    }
}

@Suite(.serialized) struct StorageContractTests {
    static let accept: @Sendable (String) -> Bool = { _ in true }

    func name(_ key: String, _ environment: String = "prod", tenant: String = Revision.defaultTenant) -> EntryName {
        EntryName(tenant: tenant, environment: environment, key: key)
    }

    @Test(arguments: Engine.available)
    func writesMakeTheCurrentEntryAndAHistoryNumberedFromOne(_ engine: Engine) async throws {
        let store = try await engine.open()
        defer { Task { await store.close() } }
        let created = try await store.create(name("db"), category: "c", ciphertext: "t1", actor: "a", audit: nil)
        #expect(created.key == "db" && created.environment == "prod" && created.ciphertext == "t1" && created.category == "c")
        await #expect(throws: StoreError.alreadyExists(environment: "prod", key: "db")) {
            _ = try await store.create(name("db"), category: nil, ciphertext: "t0", actor: nil, audit: nil)
        }
        await #expect(throws: StoreError.wrongKey) {
            _ = try await store.update(name("db"), category: nil, ciphertext: "t2", actor: nil, audit: nil, authenticates: { _ in false })
        }
        let updated = try await store.update(name("db"), category: nil, ciphertext: "t2", actor: "a", audit: nil, authenticates: Self.accept)
        #expect(updated.id == created.id && updated.category == "c" && updated.hlc > created.hlc)
        #expect(try await store.entry(name("db"))?.ciphertext == "t2")
        try await store.delete(name("db"), actor: "a", audit: nil, authenticates: Self.accept)
        #expect(try await store.entry(name("db")) == nil)
        let history = try #require(try await store.history(name("db")))
        #expect(history.versions.map(\.version) == [1, 2, 3])
        #expect(history.versions.map(\.revision.deleted) == [false, false, true])
        #expect(try await store.version(1, of: name("db")).0.revision.ciphertext == "t1")
        await #expect(throws: StoreError.versionNotFound(environment: "prod", key: "db", version: 4)) {
            _ = try await store.version(4, of: name("db"))
        }
        let (back, version) = try await store.rollback(
            name("db"),
            category: "c",
            ciphertext: "t1b",
            actor: "a",
            audit: nil,
            authenticates: Self.accept
        )
        #expect(back.ciphertext == "t1b" && version == 4 && !back.deleted)
        #expect(store.liveEntryCount == 1)
    }

    @Test(arguments: Engine.available)
    func listsArePagedInCreationOrderAndKeepTenantsApart(_ engine: Engine) async throws {
        let store = try await engine.open()
        defer { Task { await store.close() } }
        for i in 0..<7 { _ = try await store.create(name("k\(i)"), category: i % 2 == 0 ? "even" : nil, ciphertext: "t", actor: nil, audit: nil) }
        _ = try await store.create(name("k0", tenant: "acme"), category: nil, ciphertext: "other", actor: nil, audit: nil)
        _ = try await store.create(
            EntryName(environment: EntryNames.identityEnvironment, key: "user"),
            category: nil,
            ciphertext: "u",
            actor: nil,
            audit: nil
        )
        let all = try await store.list(
            tenant: Revision.defaultTenant,
            environment: nil,
            category: nil,
            limit: nil,
            offset: 0,
            afterID: nil,
            includeDeleted: false
        )
        #expect(all.map(\.key) == (0..<7).map { "k\($0)" }, "no other tenant's entries, no users")
        let page = try await store.list(
            tenant: Revision.defaultTenant,
            environment: "prod",
            category: nil,
            limit: 3,
            offset: 0,
            afterID: all[1].id,
            includeDeleted: false
        )
        #expect(page.map(\.key) == ["k2", "k3", "k4"])
        let even = try await store.list(
            tenant: Revision.defaultTenant,
            environment: nil,
            category: "even",
            limit: nil,
            offset: 1,
            afterID: nil,
            includeDeleted: false
        )
        #expect(even.map(\.key) == ["k2", "k4", "k6"])
        let acme = try await store.list(tenant: "acme", environment: nil, category: nil, limit: nil, offset: 0, afterID: nil, includeDeleted: false)
        #expect(acme.map(\.ciphertext) == ["other"] && acme.map(\.tenant) == ["acme"])
        #expect(try await store.entry(name("k0", tenant: "acme"))?.ciphertext == "other")
    }

    @Test(arguments: Engine.available)
    func maxVersionsPrunesTheOldestAndKeepsTheNumbers(_ engine: Engine) async throws {
        let store = try await engine.open(maxVersions: 2)
        defer { Task { await store.close() } }
        _ = try await store.create(name("k"), category: nil, ciphertext: "v1", actor: nil, audit: nil)
        for v in 2...4 {
            _ = try await store.update(name("k"), category: nil, ciphertext: "v\(v)", actor: nil, audit: nil, authenticates: Self.accept)
        }
        let history = try #require(try await store.history(name("k")))
        #expect(history.prunedCount == 2 && history.versions.map(\.version) == [3, 4])
        await #expect(throws: StoreError.versionPruned(environment: "prod", key: "k", version: 1)) {
            _ = try await store.version(1, of: name("k"))
        }
        #expect(try await store.changeFeedHorizon() > 0, "a reader resuming below the pruned revisions is told")
    }

    @Test(arguments: Engine.available)
    func pastStatesAndRestoresFollowTheOriginsWallClock(_ engine: Engine) async throws {
        let store = try await engine.open()
        defer { Task { await store.close() } }
        _ = try await store.create(name("a"), category: nil, ciphertext: "a1", actor: nil, audit: nil)
        try await Task.sleep(for: .milliseconds(20))
        let between = WritePlan.nowMicros()
        try await Task.sleep(for: .milliseconds(20))
        let a2 = try await store.update(name("a"), category: nil, ciphertext: "a2", actor: nil, audit: nil, authenticates: Self.accept)
        _ = try await store.create(name("b"), category: nil, ciphertext: "b1", actor: nil, audit: nil)
        let (past, _) = try await store.pastState(of: name("a"), atOrBeforeMicros: between)
        guard case let .live(revision) = past else { Issue.record("not live: \(past)"); return }
        #expect(revision.ciphertext == "a1")
        #expect(try await store.pastState(of: name("b"), atOrBeforeMicros: between).0 == .absent)
        let states = try await store.pastStates(tenant: Revision.defaultTenant, environment: "prod", atOrBeforeMicros: between)
        #expect(states.map(\.current.key) == ["a", "b"])
        // A plan made against a revision that changed since is refused whole.
        let stale = PlannedRestore(key: "a", expectedHLC: a2.hlc - 1, expectedOrigin: a2.origin, change: .put(category: nil, ciphertext: "a1"))
        await #expect(throws: StoreError.self) {
            try await store.restore(tenant: Revision.defaultTenant, environment: "prod", changes: [stale], actor: nil, audit: nil)
        }
        let b = try #require(try await store.entry(name("b")))
        try await store.restore(
            tenant: Revision.defaultTenant,
            environment: "prod",
            changes: [
                PlannedRestore(key: "a", expectedHLC: a2.hlc, expectedOrigin: a2.origin, change: .put(category: nil, ciphertext: "a1")),
                PlannedRestore(key: "b", expectedHLC: b.hlc, expectedOrigin: b.origin, change: .delete),
            ],
            actor: nil,
            audit: nil
        )
        #expect(try await store.entry(name("a"))?.ciphertext == "a1")
        #expect(try await store.entry(name("b")) == nil)
        #expect(store.liveEntryCount == 1)
    }

    @Test(arguments: Engine.available)
    func theAuditTrailIsOneChainAndAFailedWriteLeavesNoRecord(_ engine: Engine) async throws {
        let store = try await engine.open()
        defer { Task { await store.close() } }
        func draft(_ i: Int) -> AuditRecordDraft {
            AuditRecordDraft(
                time: Int64(i),
                nodeID: "n",
                actor: "a",
                client: "c",
                action: "read",
                environment: "prod",
                key: "k\(i)",
                outcome: "ok",
                status: 200,
                requestID: "r\(i)"
            )
        }
        for i in 1...5 { _ = try await store.appendAudit(draft(i)) }
        _ = try await store.create(name("k"), category: nil, ciphertext: "t", actor: nil, audit: draft(6))
        await #expect(throws: StoreError.self) {
            _ = try await store.create(name("k"), category: nil, ciphertext: "t", actor: nil, audit: draft(7))
        }
        #expect(try await store.auditRecordCount() == 6, "a failed write leaves no record")
        let verified = try await store.verifyAudit()
        #expect(verified.valid && verified.records == 6)
        let found = try await store.auditRecords(AuditFilter(key: "k3"), afterID: nil, limit: 10)
        #expect(found.map(\.id) == [3] && found.first?.draft == draft(3))
        #expect(try await store.auditRecords(AuditFilter(), afterID: 4, limit: 10).map(\.id) == [5, 6])
    }

    @Test(arguments: Engine.available)
    func theChangeFeedNamesWhatEachRevisionDid(_ engine: Engine) async throws {
        let store = try await engine.open()
        defer { Task { await store.close() } }
        let start = try await store.lastChangeSeq()
        _ = try await store.create(name("k"), category: nil, ciphertext: "t1", actor: nil, audit: nil)
        _ = try await store.update(name("k"), category: nil, ciphertext: "t2", actor: nil, audit: nil, authenticates: Self.accept)
        _ = try await store.create(
            EntryName(environment: EntryNames.identityEnvironment, key: "user"),
            category: nil,
            ciphertext: "u",
            actor: nil,
            audit: nil
        )
        try await store.delete(name("k"), actor: nil, audit: nil, authenticates: Self.accept)
        _ = try await store.create(name("k"), category: nil, ciphertext: "t3", actor: nil, audit: nil)
        let page = try await store.changes(after: start, limit: 100)
        #expect(page.changes.map(\.kind) == [.created, .updated, .deleted, .created], "users are no change events")
        #expect(page.through == (try await store.lastChangeSeq()))
        let rest = try await store.changes(after: page.changes[1].seq, limit: 1)
        #expect(rest.changes.isEmpty || rest.changes.map(\.kind) == [.deleted], "a page of one revision reads one")
    }

    @Test(arguments: Engine.available)
    func metadataIsClaimedByTheFirstWriter(_ engine: Engine) async throws {
        let store = try await engine.open()
        defer { Task { await store.close() } }
        #expect(try store.metadata("salt_fingerprint") == nil)
        #expect(try store.claimMetadata("salt_fingerprint", "first") == "first")
        #expect(try store.claimMetadata("salt_fingerprint", "second") == "first")
        try store.setMetadata("kdf_iterations", "480000")
        #expect(try store.metadata("kdf_iterations") == "480000")
        #expect(try store.hasData() == false)
    }
}
