import Foundation

/// The pool has been shut down; no more work is accepted.
public struct BlockingWorkPoolStopped: Error {}

/// A fixed set of threads for CPU-heavy blocking work (key derivations), so that it never
/// occupies the threads of Swift's cooperative pool or of the event loops.
///
/// `@unchecked Sendable`: `jobs` and `stopped` are read and written only while holding
/// `condition`'s lock.
final class BlockingWorkPool: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var stopped = false

    init(threads: Int, name: String) {
        for i in 0..<max(1, threads) {
            let thread = Thread { [self] in self.work() }
            thread.name = "\(name)-\(i)"
            thread.start()
        }
    }

    /// Runs `body` on a pool thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            condition.lock()
            guard !stopped else {
                condition.unlock()
                continuation.resume(throwing: BlockingWorkPoolStopped())
                return
            }
            jobs.append { continuation.resume(with: Result { try body() }) }
            condition.signal()
            condition.unlock()
        }
    }

    /// Lets queued work finish, then ends the threads.
    func shutdown() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    private func work() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopped { condition.wait() }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }
}
