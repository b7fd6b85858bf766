import Foundation
import GRDB
import Logging
import Synchronization

/// Serialises writes and folds the ones that arrive together into one SQLite
/// transaction, so one fsync acknowledges many writes. Each write runs in its own
/// savepoint: one that throws is rolled back alone and its caller gets the error; the
/// others commit. Audit records submitted alone (a read's record) are folded further:
/// consecutive ones in a batch share one savepoint and one read and update of the chain's
/// head, each still its own chained record. Every caller resumes only after the
/// transaction has committed.
///
/// The batches run on a thread of the writer's own, with GRDB's synchronous API: no hop
/// through the concurrency pool and the database queue per batch. The thread ends after a
/// second without work and starts again with the next write.
final class GroupCommitWriter: Sendable {
    private enum Job: Sendable {
        case body(perform: @Sendable (Database) throws -> Void, finish: @Sendable ((any Error)?) -> Void)
        case audit(AuditRecordDraft, finish: @Sendable (Result<AuditRecord, any Error>) -> Void)
    }

    private struct State {
        var pending: [Job] = []
        /// The writer thread exists (waiting for work or running a batch).
        var running = false
        /// A batch is being committed.
        var busy = false
        /// The thread waits for work (only then does a new write signal it).
        var idle = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// `NSCondition` guards `state`: the thread waits on it for work.
    private final class Shared: @unchecked Sendable {
        let condition = NSCondition()
        var state = State()
    }

    private let pool: DatabasePool
    private let maxBatch: Int
    private let logger: Logger
    private let shared = Shared()
    /// Why the last group commit failed, until one succeeds.
    let lastFailure = Mutex<String?>(nil)

    /// How long a batch under concurrent load waits for more writes before it commits.
    let lingerMicros: Int

    init(pool: DatabasePool, maxBatch: Int, lingerMicros: Int = 200, logger: Logger) {
        self.pool = pool
        self.maxBatch = max(1, maxBatch)
        self.lingerMicros = max(0, lingerMicros)
        self.logger = logger
    }

    func submit<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let outcome = Mutex<Result<T, any Error>?>(nil)
            enqueue(
                .body(
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
            )
        }
    }

    /// Appends one audit record in the next group commit; returns once it is durable.
    func submitAudit(_ draft: AuditRecordDraft) async throws -> AuditRecord {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<AuditRecord, any Error>) in
            enqueue(.audit(draft, finish: { continuation.resume(with: $0) }))
        }
    }

    private func enqueue(_ job: Job) {
        let shared = self.shared
        shared.condition.lock()
        shared.state.pending.append(job)
        let start = !shared.state.running
        if start {
            shared.state.running = true
        } else if shared.state.idle || shared.state.pending.count >= maxBatch {
            shared.condition.signal()
        }
        shared.condition.unlock()
        if start {
            let thread = Thread { [self] in self.loop() }
            thread.name = "secureconf-writer"
            thread.start()
        }
    }

    /// Waits until no write is pending or running.
    func drain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            shared.condition.lock()
            let idle = shared.state.pending.isEmpty && !shared.state.busy
            if !idle { shared.state.idleWaiters.append(continuation) }
            shared.condition.unlock()
            if idle { continuation.resume() }
        }
    }

    private func loop() {
        let shared = self.shared
        var lastBatch = 0
        while true {
            shared.condition.lock()
            if shared.state.pending.isEmpty {
                let waiters = shared.state.idleWaiters
                shared.state.idleWaiters = []
                if !waiters.isEmpty {
                    shared.condition.unlock()
                    waiters.forEach { $0.resume() }
                    shared.condition.lock()
                }
            }
            while shared.state.pending.isEmpty {
                shared.state.idle = true
                let signalled = shared.condition.wait(until: Date(timeIntervalSinceNow: 1))
                shared.state.idle = false
                if !signalled && shared.state.pending.isEmpty {
                    shared.state.running = false
                    let waiters = shared.state.idleWaiters
                    shared.state.idleWaiters = []
                    shared.condition.unlock()
                    waiters.forEach { $0.resume() }
                    return
                }
            }
            // Under concurrent load (the last batch folded several writes and several wait), wait a moment for
            // more before committing, as PostgreSQL's commit_delay does: on a busy machine one
            // fsync and one head update then acknowledge many more writes, for at most
            // `lingerMicros` more latency. A lone writer never waits.
            if lastBatch > 1 && (2..<maxBatch).contains(shared.state.pending.count) && lingerMicros > 0 {
                let deadline = Date(timeIntervalSinceNow: Double(lingerMicros) / 1e6)
                while shared.state.pending.count < maxBatch && shared.condition.wait(until: deadline) {}
            }
            let take = min(shared.state.pending.count, maxBatch)
            lastBatch = take
            let batch = Array(shared.state.pending.prefix(take))
            shared.state.pending.removeFirst(take)
            shared.state.busy = true
            shared.condition.unlock()
            commit(batch)
            shared.condition.lock()
            shared.state.busy = false
            shared.condition.unlock()
        }
    }

    /// A batch's work in order: a write alone, or a run of consecutive audit records.
    private enum Step {
        case body(Int)
        case audits(Range<Int>)
    }

    private func commit(_ batch: [Job]) {
        var steps: [Step] = []
        var i = 0
        while i < batch.count {
            guard case .audit = batch[i] else {
                steps.append(.body(i))
                i += 1
                continue
            }
            var j = i
            while j < batch.count, case .audit = batch[j] { j += 1 }
            steps.append(.audits(i..<j))
            i = j
        }
        var commitError: (any Error)?
        // A job refused by storage itself (disk full, read-only) marks storage as failing
        // even when the batch's transaction commits (its savepoint was rolled back).
        var jobStorageFailure: String?
        var folded: [Int: Result<[AuditRecord], any Error>] = [:]
        do {
            try pool.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    for (s, step) in steps.enumerated() {
                        do {
                            switch step {
                            case .body(let index):
                                guard case .body(let perform, _) = batch[index] else { continue }
                                // The job's own error is recorded by the job; its savepoint is rolled back.
                                try db.inSavepoint {
                                    try perform(db)
                                    return .commit
                                }
                            case .audits(let range):
                                let drafts = range.compactMap { index -> AuditRecordDraft? in
                                    guard case .audit(let draft, _) = batch[index] else { return nil }
                                    return draft
                                }
                                do {
                                    var records: [AuditRecord] = []
                                    try db.inSavepoint {
                                        records = try ConfigStore.appendAudits(drafts, db: db)
                                        return .commit
                                    }
                                    folded[s] = .success(records)
                                } catch {
                                    folded[s] = .failure(error)
                                    throw error
                                }
                            }
                        } catch let error as DatabaseError where Self.isStorageFailure(error) {
                            jobStorageFailure = Self.describe(error)
                        } catch {}
                    }
                    return .commit
                }
            }
        } catch {
            logger.error("group commit failed", metadata: ["error": "\(error)", "writes": "\(batch.count)"])
            commitError = StoreError.unavailable(Self.describe(error))
        }
        lastFailure.withLock { $0 = commitError.map { "\($0)" } ?? jobStorageFailure }
        for (s, step) in steps.enumerated() {
            switch step {
            case .body(let index):
                if case .body(_, let finish) = batch[index] { finish(commitError) }
            case .audits(let range):
                for (k, index) in range.enumerated() {
                    guard case .audit(_, let finish) = batch[index] else { continue }
                    if let commitError {
                        finish(.failure(commitError))
                        continue
                    }
                    switch folded[s] {
                    case .success(let records)? where k < records.count: finish(.success(records[k]))
                    case .failure(let error)?: finish(.failure(StoreError.unavailable(Self.describe(error))))
                    default: finish(.failure(StoreError.unavailable("audit record was not written")))
                    }
                }
            }
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
