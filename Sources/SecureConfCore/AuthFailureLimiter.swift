import Foundation
import Synchronization

/// Counts failed user-key attempts per client address in a fixed window. A client over the
/// limit gets 429 for requests that would need a new key derivation; requests whose key is
/// already cached (proven right) still pass, so a client behind the same address that
/// knows its key is not locked out.
public final class AuthFailureLimiter: Sendable {
    private struct Window {
        var failures: Int
        var started: ContinuousClock.Instant
    }

    let limit: Int
    let window: Duration
    private let state = Mutex<[String: Window]>([:])

    public init(limit: Int, windowSeconds: Double) {
        self.limit = limit
        self.window = .milliseconds(Int64(windowSeconds * 1000))
    }

    /// Checks `client` (429 when over the limit) and counts one failure in the same step, so
    /// concurrent derivations cannot all pass a check made before any of them is counted.
    /// `refund` takes it back once the derived key is proven.
    public func acquire(_ client: String) throws(ServiceError) {
        guard limit > 0 else { return }
        let now = ContinuousClock.now
        let retryAfter: Int? = state.withLock { s in
            if s.count > 100_000 { s = s.filter { now - $0.value.started < window } }
            guard var w = s[client], now - w.started < window else {
                s[client] = Window(failures: 1, started: now)
                return nil
            }
            guard w.failures < limit else { return max(1, Int((window - (now - w.started)).components.seconds) + 1) }
            w.failures += 1
            s[client] = w
            return nil
        }
        if let retryAfter {
            throw ServiceError(
                .authRateLimited,
                "Too many failed user-key attempts from this client; retry in \(retryAfter) s",
                retryAfter: retryAfter
            )
        }
    }

    /// Takes back one failure counted by `acquire` (the key was proven).
    public func refund(_ client: String) {
        guard limit > 0 else { return }
        state.withLock { s in
            if var w = s[client], w.failures > 0 {
                w.failures -= 1
                s[client] = w
            }
        }
    }

    public func recordFailure(_ client: String) {
        guard limit > 0 else { return }
        let now = ContinuousClock.now
        state.withLock { s in
            if s.count > 100_000 { s = s.filter { now - $0.value.started < window } }
            if var w = s[client], now - w.started < window {
                w.failures += 1
                s[client] = w
            } else {
                s[client] = Window(failures: 1, started: now)
            }
        }
    }
}
