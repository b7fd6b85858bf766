import Foundation
import GRDB
import Synchronization
import Testing

@testable import SecureConfStore

/// Guarantees a mutation run of the suite found under-tested: a write whose COMMIT fails is
/// never acknowledged, and the audit chain matches hashes computed independently of the code.
@Suite struct StoreGuaranteeTests {
    let directory = temporaryDirectory()

    /// Fails every commit while `failing` is set.
    final class FailingCommits: TransactionObserver, @unchecked Sendable {
        // @unchecked: touched only on the database's writer queue (GRDB calls observers there)
        // and by the test between writes, never concurrently.
        var failing = true
        struct Refused: Error {}
        func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool { true }
        func databaseDidChange(with event: DatabaseEvent) {}
        func databaseWillCommit() throws { if failing { throw Refused() } }
        func databaseDidCommit(_ db: Database) {}
        func databaseDidRollback(_ db: Database) {}
    }

    @Test func aWriteWhoseCommitFailsIsNeverAcknowledged() async throws {
        let store = try ConfigStore(configuration: .init(path: directory + "/commit.db", nodeID: "a:1"))
        let observer = FailingCommits()
        store.pool.add(transactionObserver: observer, extent: .observerLifetime)
        await #expect(throws: (any Error).self, "the create is refused, not acknowledged") {
            try await store.create(environment: "default", key: "k", category: nil, ciphertext: "v")
        }
        #expect(try await store.entry(environment: "default", key: "k") == nil)
        #expect(store.liveEntryCount == 0, "the in-memory counter did not move either")
        observer.failing = false
        _ = try await store.create(environment: "default", key: "k", category: nil, ciphertext: "v")
        #expect(try await store.entry(environment: "default", key: "k")?.ciphertext == "v")
        #expect(store.liveEntryCount == 1)
    }

    @Test func theAuditChainMatchesReferenceHashes() async throws {
        // Computed with Python's hashlib from the format in AuditChain's documentation:
        // SHA-256(previous hash || "SCAUDIT1" || length-prefixed fields), genesis = 32 zero bytes.
        let store = try ConfigStore(configuration: .init(path: directory + "/audit.db", nodeID: "127.0.0.1:9000"))
        let first = try await store.appendAudit(
            AuditRecordDraft(
                time: 1_750_000_000_000_000,
                nodeID: "127.0.0.1:9000",
                actor: "uk:0123456789ab",
                client: "127.0.0.1:5000",
                action: "create",
                environment: "prod",
                key: "db",
                outcome: "success",
                status: 201,
                requestID: "req-1"
            )
        )
        let second = try await store.appendAudit(
            AuditRecordDraft(
                time: 1_750_000_000_000_001,
                nodeID: "127.0.0.1:9000",
                actor: "anonymous",
                client: "[::1]:1",
                action: "read",
                environment: nil,
                key: nil,
                outcome: "denied",
                status: 401,
                requestID: "req-2"
            )
        )
        #expect(first.hash == "580cb4a494388a0efcecac5d24fbda677e3e5cdef3cfe58892538f4ee2a3bbb5")
        #expect(second.hash == "a900152c9c7644a3c1d2eee60531968095a71f32787cec94f82bb0239497f226")
        let verdict = try await store.verifyAudit()
        #expect(verdict.valid && verdict.headHash == second.hash)
    }
}
