import Foundation
import PostgresNIO
import SecureConfStore
import Synchronization

/// Group commit on PostgreSQL: the writes and audit records a node's requests submit while a
/// transaction is under way wait for it, then go together in the next one, so that a burst of
/// requests costs one commit (one WAL flush) instead of one each. Each write runs in its own
/// savepoint: one that is refused (a key that exists, a wrong key) is rolled back alone and
/// the others commit. Runs of audit records share one read and update of the chain's head;
/// every request keeps its own record. Each returns only once its transaction is durable.
final class PostgresGroupCommit: Sendable {
    private enum Work: Sendable {
        case write(@Sendable (PostgresTransaction) async throws -> any Sendable)
        case audit(AuditRecordDraft)

        var isWrite: Bool {
            if case .write = self { return true }
            return false
        }
    }

    private struct Job: Sendable {
        let work: Work
        let done: CheckedContinuation<any Sendable, any Error>
    }

    private let database: PostgresDatabase
    private let keep: Int?
    private let notifyChannel: String
    /// The most requests folded into one transaction.
    private let maxBatch = 256
    private let pending = Mutex<(jobs: [Job], flushing: Bool)>(([], false))

    init(database: PostgresDatabase, keep: Int?, notifyChannel: String) {
        self.database = database
        self.keep = keep
        self.notifyChannel = notifyChannel
    }

    /// Runs `body` in the next group commit, holding the write lock.
    func write<T: Sendable>(_ body: @escaping @Sendable (PostgresTransaction) async throws -> T) async throws -> T {
        guard let value = try await submit(.write({ tx in try await body(tx) })) as? T else {
            throw StoreError.unavailable("group commit returned another type")
        }
        return value
    }

    /// Appends an audit record in the next group commit.
    func audit(_ draft: AuditRecordDraft) async throws -> AuditRecord {
        guard let record = try await submit(.audit(draft)) as? AuditRecord else {
            throw StoreError.unavailable("group commit returned another type")
        }
        return record
    }

    private func submit(_ work: Work) async throws -> any Sendable {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<any Sendable, any Error>) in
            let start = pending.withLock { p in
                p.jobs.append(Job(work: work, done: continuation))
                if p.flushing { return false }
                p.flushing = true
                return true
            }
            if start { Task { await self.flush() } }
        }
    }

    /// Commits batches until nothing waits.
    private func flush() async {
        while true {
            let batch = pending.withLock { p -> [Job] in
                guard !p.jobs.isEmpty else {
                    p.flushing = false
                    return []
                }
                let n = min(maxBatch, p.jobs.count)
                defer { p.jobs.removeFirst(n) }
                return Array(p.jobs.prefix(n))
            }
            if batch.isEmpty { return }
            await commit(batch)
        }
    }

    private func commit(_ batch: [Job]) async {
        let works = batch.map(\.work)
        let (keep, channel) = (self.keep, notifyChannel)
        do {
            let results = try await database.transaction { tx -> [Result<any Sendable, any Error>] in
                tx.keep = keep
                if works.contains(where: \.isWrite) { try await tx.lockWrites() }
                var results: [Result<any Sendable, any Error>] = []
                results.reserveCapacity(works.count)
                var wrote = false
                var i = 0
                while i < works.count {
                    switch works[i] {
                    case .audit:
                        var drafts: [AuditRecordDraft] = []
                        while i < works.count, case let .audit(draft) = works[i] {
                            drafts.append(draft)
                            i += 1
                        }
                        for record in try await tx.appendAudits(drafts) { results.append(.success(record)) }
                    case let .write(body):
                        try await tx.execute("SAVEPOINT request")
                        do {
                            let value = try await body(tx)
                            try await tx.execute("RELEASE SAVEPOINT request")
                            results.append(.success(value))
                            wrote = true
                        } catch {
                            // Undone alone; a connection that is gone fails the whole batch here.
                            try await tx.execute("ROLLBACK TO SAVEPOINT request")
                            try await tx.execute("RELEASE SAVEPOINT request")
                            results.append(.failure(error is StoreError ? error : PostgresDatabase.refusal(error)))
                        }
                        i += 1
                    }
                }
                if wrote { try await tx.execute("SELECT pg_notify(\(channel), '')") }
                return results
            }
            for (job, result) in zip(batch, results) { job.done.resume(with: result) }
        } catch {
            for job in batch { job.done.resume(throwing: error) }
        }
    }
}
