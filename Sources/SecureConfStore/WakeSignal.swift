import Synchronization

/// Wakes one waiting loop: a signal sent while nobody waits is remembered once.
public final class WakeSignal: Sendable {
    public init() {}

    private let state = Mutex<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    public func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns on a signal, after `timeout`, or when the waiting task is cancelled (a loop
    /// ending at shutdown), whichever comes first.
    public func wait(timeout: Duration) async {
        let timer = Task { [self] in
            // A cancelled timer must not signal: that would leave a stale wake-up behind
            // and turn the next wait into a busy loop.
            do { try await Task.sleep(for: timeout) } catch { return }
            signal()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.pending || Task.isCancelled {
                        s.pending = false
                        return true
                    }
                    s.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume()
        }
        timer.cancel()
    }
}
