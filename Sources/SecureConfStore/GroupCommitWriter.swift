import GRDB
import Logging
import Synchronization

/// Serialises writes and folds the ones that arrive together into one SQLite
/// transaction, so one fsync acknowledges many writes. Each write runs in its own
/// savepoint: one that throws is rolled back alone and its caller gets the error; the
/// others commit. Every caller resumes only after the transaction has committed.
final class GroupCommitWriter: Sendable {
    private struct Job: Sendable {
        let perform: @Sendable (Database) throws -> Void
        let finish: @Sendable ((any Error)?) -> Void
    }

    private struct State {
        var pending: [Job] = []
        var running = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let pool: DatabasePool
    private let maxBatch: Int
    private let logger: Logger
    private let state = Mutex(State())
    /// Why the last group commit failed, until one succeeds.
    let lastFailure = Mutex<String?>(nil)

    init(pool: DatabasePool, maxBatch: Int, logger: Logger) {
        self.pool = pool
        self.maxBatch = max(1, maxBatch)
        self.logger = logger
    }

    func submit<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let outcome = Mutex<Result<T, any Error>?>(nil)
            let job = Job(
                perform: { db in
                    do {
                        let value = try body(db)
                        outcome.withLock { $0 = .success(value) }
                    } catch {
                        outcome.withLock { $0 = .failure(error) }
                        throw error
                    }
                },
                finish: { commitError in
                    let result = outcome.withLock { $0 }
                    switch (commitError, result) {
                    case (_, .failure(let error)?): continuation.resume(throwing: error)
                    case (let error?, _): continuation.resume(throwing: error)
                    case (nil, .success(let value)?): continuation.resume(returning: value)
                    case (nil, nil): continuation.resume(throwing: StoreError.unavailable("write was not executed"))
                    }
                }
            )
            let startWriter = state.withLock { s -> Bool in
                s.pending.append(job)
                if s.running { return false }
                s.running = true
                return true
            }
            if startWriter {
                Task { await self.run() }
            }
        }
    }

    /// Waits until no write is pending or running.
    func drain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = state.withLock { s -> Bool in
                if !s.running && s.pending.isEmpty { return true }
                s.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    private func run() async {
        while true {
            let (batch, waiters): ([Job], [CheckedContinuation<Void, Never>]) = state.withLock { s in
                if s.pending.isEmpty {
                    s.running = false
                    let w = s.idleWaiters
                    s.idleWaiters = []
                    return ([], w)
                }
                let take = min(s.pending.count, maxBatch)
                let batch = Array(s.pending.prefix(take))
                s.pending.removeFirst(take)
                return (batch, [])
            }
            if batch.isEmpty {
                waiters.forEach { $0.resume() }
                return
            }
            var commitError: (any Error)?
            // A job refused by storage itself (disk full, read-only) marks storage as failing
            // even when the batch's transaction commits (its savepoint was rolled back).
            let jobStorageFailure = Mutex<String?>(nil)
            do {
                try await pool.writeWithoutTransaction { db in
                    try db.inTransaction(.immediate) {
                        for job in batch {
                            // The job's own error is recorded by the job; its savepoint is rolled back.
                            do {
                                try db.inSavepoint {
                                    try job.perform(db)
                                    return .commit
                                }
                            } catch let error as DatabaseError where Self.isStorageFailure(error) {
                                jobStorageFailure.withLock { $0 = Self.describe(error) }
                            } catch {}
                        }
                        return .commit
                    }
                }
            } catch {
                logger.error("group commit failed", metadata: ["error": "\(error)", "writes": "\(batch.count)"])
                commitError = StoreError.unavailable(Self.describe(error))
            }
            let failure: String? = commitError.map { "\($0)" } ?? jobStorageFailure.withLock { $0 }
            lastFailure.withLock { $0 = failure }
            for job in batch { job.finish(commitError) }
        }
    }

    static func isStorageFailure(_ error: DatabaseError) -> Bool {
        [.SQLITE_FULL, .SQLITE_READONLY, .SQLITE_IOERR, .SQLITE_CANTOPEN].contains(error.resultCode.primaryResultCode)
    }

    private static func describe(_ error: any Error) -> String {
        if let db = error as? DatabaseError {
            switch db.resultCode {
            case .SQLITE_FULL: return "disk full"
            case .SQLITE_READONLY: return "database is read-only"
            case .SQLITE_IOERR: return "I/O error"
            case .SQLITE_BUSY, .SQLITE_LOCKED: return "database is busy"
            default: return "database error \(db.resultCode.rawValue)"
            }
        }
        return "write failed"
    }
}
