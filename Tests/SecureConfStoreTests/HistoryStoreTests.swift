import Foundation
import GRDB
import Testing

@testable import SecureConfStore

@Suite struct HistoryStoreTests {
    let directory = temporaryDirectory()
    var path: String { directory + "/store.db" }

    func open(maxVersions: Int? = nil, node: String = "127.0.0.1:9001") throws -> ConfigStore {
        var configuration = ConfigStore.Configuration(path: path, nodeID: node)
        configuration.maxVersions = maxVersions
        return try ConfigStore(configuration: configuration)
    }

    func draft(_ action: String, key: String? = "k", status: Int = 200) -> AuditRecordDraft {
        AuditRecordDraft(
            time: 1_700_000_000_000_000,
            nodeID: "n:1",
            actor: "uk:abc",
            client: "127.0.0.1:5000",
            action: action,
            environment: "default",
            key: key,
            outcome: status < 400 ? "success" : "failure",
            status: status,
            requestID: "r"
        )
    }

    @Test func versionsAreNumberedOldestFirstAndSurviveReopening() async throws {
        let store = try open()
        _ = try await store.create(environment: "e", key: "k", category: "c", ciphertext: "t1", actor: "uk:a")
        _ = try await store.update(environment: "e", key: "k", category: nil, ciphertext: "t2", actor: "uk:a") { $0 == "t1" }
        try await store.delete(environment: "e", key: "k", actor: "uk:b") { $0 == "t2" }
        await store.close()
        let reopened = try open()
        let history = try #require(try await reopened.history(environment: "e", key: "k"))
        #expect(history.versions.map(\.version) == [1, 2, 3])
        #expect(history.versions.map(\.revision.ciphertext) == ["t1", "t2", ""])
        #expect(history.versions.map(\.revision.actor) == ["uk:a", "uk:a", "uk:b"])
        #expect(try await reopened.version(2, environment: "e", key: "k").0.revision.ciphertext == "t2")
        await #expect(throws: StoreError.versionNotFound(environment: "e", key: "k", version: 4)) {
            try await reopened.version(4, environment: "e", key: "k")
        }
        await #expect(throws: StoreError.notFound(environment: "e", key: "nope")) {
            try await reopened.version(1, environment: "e", key: "nope")
        }
        #expect(try await reopened.history(environment: "other", key: "k") == nil)
    }

    @Test func retentionPrunesTheOldestAndKeepsNumbers() async throws {
        let store = try open(maxVersions: 2)
        _ = try await store.create(environment: "e", key: "k", category: nil, ciphertext: "t1")
        for i in 2...5 {
            _ = try await store.update(environment: "e", key: "k", category: nil, ciphertext: "t\(i)") { _ in true }
        }
        _ = try await store.create(environment: "e", key: "other", category: nil, ciphertext: "o1")
        let history = try #require(try await store.history(environment: "e", key: "k"))
        #expect(history.prunedCount == 3)
        #expect(history.versions.map(\.version) == [4, 5])
        #expect(history.versions.map(\.revision.ciphertext) == ["t4", "t5"])
        #expect(try await store.entry(environment: "e", key: "k")?.ciphertext == "t5", "the current revision is never pruned")
        await #expect(throws: StoreError.versionPruned(environment: "e", key: "k", version: 2)) {
            try await store.version(2, environment: "e", key: "k")
        }
        #expect(try await store.history(environment: "e", key: "other")?.versions.count == 1, "other keys keep their own history")
        // A replicated copy of a pruned revision is recognised, not added back.
        let pruned = try await DatabaseQueue(path: path).read { db in
            try Row.fetchOne(db, sql: "SELECT hlc, origin FROM pruned_revisions WHERE key = 'k' ORDER BY hlc LIMIT 1")
        }
        let row = try #require(pruned)
        let copy = Revision(
            environment: "e",
            key: "k",
            category: nil,
            ciphertext: "t1",
            hlc: row[0],
            origin: row[1],
            deleted: false,
            createdAt: 1,
            updatedAt: 1
        )
        #expect(try await store.apply(batch: [copy]).applied == 0)
        #expect(try await store.history(environment: "e", key: "k")?.versions.map(\.version) == [4, 5])
    }

    @Test func ownPrunedRevisionsTravelAsMarkersAndNumberVersionsAlike() async throws {
        let a = try open(maxVersions: 2)
        var configuration = ConfigStore.Configuration(path: directory + "/b.db", nodeID: "127.0.0.1:9002")
        configuration.maxVersions = 2
        let b = try ConfigStore(configuration: configuration)
        let first = try await a.create(environment: "e", key: "k", category: nil, ciphertext: "t1")
        _ = try await b.apply(batch: try await a.ownRevisions(after: 0, limit: 10, maxBytes: 1 << 20).map(\.revision))
        for i in 2...4 { _ = try await a.update(environment: "e", key: "k", category: nil, ciphertext: "t\(i)") { _ in true } }
        // b missed t2 (pruned on a before it was shipped): it arrives as a marker, by its sequence number.
        let shipped = try await a.ownRevisions(after: 1, limit: 10, maxBytes: 1 << 20)
        #expect(shipped.map(\.revision.ciphertext) == ["t3", "t4"])
        let markers = try await a.ownPruned(after: 1, through: .max, limit: 10)
        #expect(markers.count == 1 && markers[0].seq == 2)
        let held = PrunedMarker(environment: "e", key: "k", hlc: first.hlc, origin: first.origin, deleted: false)
        _ = try await b.apply(batch: shipped.map(\.revision), pruned: markers.map(\.marker) + [held])
        for store in [a, b] {
            let h = try #require(try await store.history(environment: "e", key: "k"))
            #expect(h.prunedCount == 2 && h.versions.map(\.version) == [3, 4], "one count: a held revision's marker is not counted twice")
        }
        #expect(try await a.digest().digest == (try await b.digest().digest))
        await a.close()
        await b.close()
    }

    @Test func aPurgingRevisionRemovesOlderOnesOnEveryStoreInAnyOrder() async throws {
        let a = try open()
        func store(_ name: String, _ node: String) throws -> ConfigStore {
            try ConfigStore(configuration: .init(path: directory + "/\(name).db", nodeID: node))
        }
        let (b, c) = (try store("b", "127.0.0.1:9002"), try store("c", "127.0.0.1:9003"))
        _ = try await a.create(environment: "e", key: "k", category: nil, ciphertext: "t1")
        let second = try await a.update(environment: "e", key: "k", category: nil, ciphertext: "t2") { _ in true }
        _ = try await a.create(environment: "e", key: "other", category: nil, ciphertext: "o1")
        let older = try await a.ownRevisions(after: 0, limit: 100, maxBytes: 1 << 20).map(\.revision)
        _ = try await b.apply(batch: older)
        try await a.restore(
            environment: "e",
            changes: [
                PlannedRestore(
                    key: "k",
                    expectedHLC: second.hlc,
                    expectedOrigin: second.origin,
                    change: .put(category: nil, ciphertext: "t3"),
                    purgesOlder: true
                )
            ]
        )
        let history = try #require(try await a.history(environment: "e", key: "k"))
        #expect(history.prunedCount == 2 && history.versions.map(\.revision.ciphertext) == ["t3"])
        #expect(try await a.history(environment: "e", key: "other")?.versions.count == 1, "other keys keep their history")
        let purging = try #require(try await a.ownRevisions(after: 0, limit: 100, maxBytes: 1 << 20).map(\.revision).last)
        #expect(purging.purgesThrough == RevisionStamp(hlc: second.hlc, origin: second.origin) && purging.ciphertext == "t3")
        // On the wire the bound travels only when set.
        let wire = try JSONDecoder().decode(Revision.self, from: JSONEncoder().encode(purging))
        #expect(wire == purging)
        #expect(!String(decoding: try JSONEncoder().encode(older[0]), as: UTF8.self).contains("purges_through"))
        // A peer holding the old revisions drops them when the purging one arrives; a peer that
        // gets the purging one first never keeps the old ones it receives later.
        _ = try await b.apply(batch: [purging])
        _ = try await c.apply(batch: [purging])
        _ = try await c.apply(batch: older)
        for peer in [b, c] {
            let h = try #require(try await peer.history(environment: "e", key: "k"))
            #expect(h.prunedCount == 2 && h.versions.map(\.version) == [3] && h.versions[0].revision.ciphertext == "t3")
            #expect(try await peer.digest().digest == (try await a.digest().digest), "purged stores compare equal")
        }
        let files = try [path, directory + "/b.db", directory + "/c.db"].map { try DatabaseQueue(path: $0) }
        for file in files {
            let old = try await file.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM revisions WHERE ciphertext IN ('t1', 't2')") }
            #expect(old == 0)
        }
        // A concurrent write after the bound (another node's, stamped before the purge) is kept.
        var concurrent = older.first { $0.key == "k" }!
        (concurrent.hlc, concurrent.origin, concurrent.ciphertext) = (second.hlc + 1, "127.0.0.1:9009", "x")
        #expect(concurrent.hlc < purging.hlc)
        _ = try await a.apply(batch: [concurrent])
        #expect(try await a.history(environment: "e", key: "k")?.versions.map(\.revision.ciphertext) == ["x", "t3"])
        for s in [a, b, c] { await s.close() }
    }

    @Test func pastStatesFollowTheOriginsWallClock() async throws {
        let store = try open()
        let first = try await store.create(environment: "e", key: "k", category: nil, ciphertext: "t1")
        try await Task.sleep(for: .milliseconds(5))
        let second = try await store.update(environment: "e", key: "k", category: nil, ciphertext: "t2") { _ in true }
        try await Task.sleep(for: .milliseconds(5))
        try await store.delete(environment: "e", key: "k") { _ in true }
        func state(at micros: Int64) async throws -> PastState { try await store.pastState(environment: "e", key: "k", atOrBeforeMicros: micros).0 }
        #expect(try await state(at: first.updatedAt - 1) == .absent)
        guard case .live(let r1) = try await state(at: first.updatedAt), case .live(let r2) = try await state(at: second.updatedAt) else {
            Issue.record("expected live revisions")
            return
        }
        #expect(r1.ciphertext == "t1" && r2.ciphertext == "t2")
        guard case .deleted = try await state(at: Int64.max) else {
            Issue.record("expected a delete")
            return
        }
        #expect(HybridLogicalClock.latestStamp(atOrBeforeMicros: 1_000_999) == (1000 << 16) | 0xFFFF)
    }

    @Test func restoreIsAtomicAndRefusesAStalePlan() async throws {
        let store = try open()
        let a = try await store.create(environment: "e", key: "a", category: nil, ciphertext: "a1")
        let b = try await store.create(environment: "e", key: "b", category: nil, ciphertext: "b1")
        _ = try await store.update(environment: "e", key: "b", category: nil, ciphertext: "b2") { _ in true }
        let stale = [
            PlannedRestore(key: "a", expectedHLC: a.hlc, expectedOrigin: a.origin, change: .put(category: nil, ciphertext: "a0")),
            PlannedRestore(key: "b", expectedHLC: b.hlc, expectedOrigin: b.origin, change: .delete),
        ]
        await #expect(throws: StoreError.self) { try await store.restore(environment: "e", changes: stale) }
        #expect(try await store.entry(environment: "e", key: "a")?.ciphertext == "a1", "nothing of a refused restore is written")
        #expect(try await store.history(environment: "e", key: "a")?.versions.count == 1)
        let current = try #require(try await store.entry(environment: "e", key: "b"))
        try await store.restore(
            environment: "e",
            changes: [
                PlannedRestore(key: "a", expectedHLC: a.hlc, expectedOrigin: a.origin, change: .put(category: "c", ciphertext: "a0")),
                PlannedRestore(key: "b", expectedHLC: current.hlc, expectedOrigin: current.origin, change: .delete),
            ],
            audit: draft("restore", key: nil)
        )
        #expect(try await store.entry(environment: "e", key: "a")?.ciphertext == "a0")
        #expect(try await store.entry(environment: "e", key: "b") == nil)
        #expect(store.liveEntryCount == 1)
        #expect(try await store.auditRecords(AuditFilter(action: "restore"), limit: 10).count == 1, "the audit record shares the write's transaction")
    }

    @Test func rollbackBringsBackADeletedKey() async throws {
        let store = try open()
        _ = try await store.create(environment: "e", key: "k", category: "c", ciphertext: "t1")
        try await store.delete(environment: "e", key: "k") { _ in true }
        #expect(store.liveEntryCount == 0)
        let (entry, version) = try await store.rollback(environment: "e", key: "k", category: "c", ciphertext: "t1b") { _ in false }
        #expect(version == 3 && entry.ciphertext == "t1b" && !entry.deleted)
        #expect(store.liveEntryCount == 1)
        await #expect(throws: StoreError.wrongKey, "a live value must be opened by the caller's key") {
            try await store.rollback(environment: "e", key: "k", category: nil, ciphertext: "x") { _ in false }
        }
    }

    /// Reads' records (folded: one savepoint and one head update per run of them in a batch)
    /// interleaved with writes carrying their own records and with writes that fail: one chain,
    /// every caller its own record, a failed write's record absent.
    @Test func foldedAuditRecordsInterleaveWithWritesInOneChain() async throws {
        let store = try open()
        _ = try await store.create(environment: "e", key: "taken", category: nil, ciphertext: "t")
        let ids = try await withThrowingTaskGroup(of: Int64?.self) { group in
            for i in 0..<300 {
                group.addTask {
                    switch i % 3 {
                    case 0: return try await store.appendAudit(draft("read", key: "r\(i)")).id
                    case 1:
                        _ = try await store.create(
                            environment: "e",
                            key: "w\(i)",
                            category: nil,
                            ciphertext: "c",
                            audit: draft("create", key: "w\(i)", status: 201)
                        )
                        return nil
                    default:
                        // Fails (the key exists): its savepoint, record included, is rolled back.
                        _ = try? await store.create(
                            environment: "e",
                            key: "taken",
                            category: nil,
                            ciphertext: "c",
                            audit: draft("create", key: "x\(i)", status: 201)
                        )
                        return nil
                    }
                }
            }
            return try await group.reduce(into: [Int64]()) { if let id = $1 { $0.append(id) } }
        }
        #expect(Set(ids).count == 100, "every read got a record of its own")
        let all = try await store.auditRecords(AuditFilter(), limit: 1000)
        #expect(all.map(\.id) == Array(1...200), "100 reads and 100 writes, ids without gaps")
        let ofFailedWrites = all.filter { ($0.draft.key ?? "").hasPrefix("x") }
        #expect(ofFailedWrites.isEmpty, "no record of a failed write")
        let verification = try await store.verifyAudit()
        #expect(verification.valid && verification.records == 200)
        await store.close()
    }

    @Test func auditChainVerifiesAndDetectsTampering() async throws {
        let store = try open()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 { group.addTask { try await store.appendAudit(draft("read", key: "k\(i)")) } }
            try await group.waitForAll()
        }
        let all = try await store.auditRecords(AuditFilter(), limit: 1000)
        #expect(all.map(\.id) == Array(1...200), "ids run 1…N without gaps")
        var verification = try await store.verifyAudit()
        #expect(verification.valid && verification.records == 200 && verification.firstBroken == nil)
        #expect(verification.headHash == all.last?.hash)
        #expect(try await store.auditRecords(AuditFilter(key: "k7"), limit: 10).count == 1)
        await store.close()

        let queue = try DatabaseQueue(path: path)
        try await queue.write { try $0.execute(sql: "UPDATE audit_log SET status = 500 WHERE id = 17") }
        var reopened = try open()
        verification = try await reopened.verifyAudit()
        #expect(!verification.valid && verification.firstBroken == 17)
        await reopened.close()

        // Re-hashing the altered record moves the break to the next one.
        try await queue.write { db in
            let record = try #require(try AuditRecord.fetchOne(db, sql: "SELECT \(AuditRecord.columns) FROM audit_log WHERE id = 17"))
            let previous = try #require(try String.fetchOne(db, sql: "SELECT hash FROM audit_log WHERE id = 16"))
            try db.execute(
                sql: "UPDATE audit_log SET hash = ? WHERE id = 17",
                arguments: [AuditChain.hash(previousHex: previous, id: 17, record.draft)]
            )
        }
        reopened = try open()
        #expect(try await reopened.verifyAudit().firstBroken == 18)
        await reopened.close()

        try await queue.write { db in
            let original = all[16]
            try db.execute(sql: "UPDATE audit_log SET status = ?, hash = ? WHERE id = 17", arguments: [original.draft.status, original.hash])
            try db.execute(sql: "DELETE FROM audit_log WHERE id = 200")
        }
        reopened = try open()
        verification = try await reopened.verifyAudit()
        #expect(!verification.valid && verification.firstBroken == 200, "a truncated tail is caught by the head")
        await reopened.close()

        try await queue.write { db in try db.execute(sql: "DELETE FROM audit_log WHERE id = 50") }
        reopened = try open()
        #expect(try await reopened.verifyAudit().firstBroken == 50, "a deleted record is caught")
    }

    @Test func canonicalBytesAreLengthPrefixed() {
        let d = AuditRecordDraft(
            time: 5,
            nodeID: "n",
            actor: "a",
            client: "c",
            action: "x",
            environment: nil,
            key: "",
            outcome: "o",
            status: 200,
            requestID: "r"
        )
        let bytes = AuditChain.canonicalBytes(id: 1, d)
        #expect(Array(bytes.prefix(8)) == Array("SCAUDIT1".utf8))
        #expect(Array(bytes[8..<13]) == [0, 0, 0, 1, UInt8(ascii: "1")])
        // id, time, node_id, actor, client, action: 1 byte each; environment null; key empty; outcome, status "200", request_id.
        #expect(bytes.count == 8 + 6 * (4 + 1) + 4 + 4 + (4 + 1) + (4 + 3) + (4 + 1))
        #expect(Hex.decode(Hex.encode([0, 255, 16])) == [0, 255, 16])
    }
}
