import SecureConfStore
import Testing

@Suite struct WakeSignalTests {
    @Test func aSignalWakesOneWaitAndLeavesNothingBehind() async throws {
        let signal = WakeSignal()
        signal.signal()
        let clock = ContinuousClock()
        let first = await clock.measure { await signal.wait(timeout: .seconds(5)) }
        #expect(first < .seconds(1), "a remembered signal wakes the next wait at once")
        // The timer of the first wait was cancelled; it must not leave a stale wake-up.
        try await Task.sleep(for: .milliseconds(50))
        let second = await clock.measure { await signal.wait(timeout: .milliseconds(300)) }
        #expect(second >= .milliseconds(250), "with no signal, a wait lasts its timeout (was \(second))")
    }

    @Test func aWaitingLoopIsWokenBySignal() async throws {
        let signal = WakeSignal()
        let clock = ContinuousClock()
        async let waited = clock.measure { await signal.wait(timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(100))
        signal.signal()
        #expect(try await waited < .seconds(5))
    }

    /// A loop cancelled at shutdown stops waiting at once (it held a node's exit for up to the
    /// change feed's one-second tick).
    @Test func aCancelledWaitReturnsAtOnce() async throws {
        let signal = WakeSignal()
        let clock = ContinuousClock()
        let started = clock.now
        let waiting = Task { await signal.wait(timeout: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(100))
        waiting.cancel()
        await waiting.value
        #expect(clock.now - started < .seconds(10))
        let already = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await signal.wait(timeout: .seconds(30))
        }
        await already.value
        #expect(clock.now - started < .seconds(20))
    }
}
