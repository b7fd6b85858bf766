import Foundation
import Synchronization

/// A hybrid logical clock: 48 bits of wall-clock milliseconds and 16 bits of logical
/// counter in one Int64, so stamps sort like integers, stay close to real time, and
/// always move forward on this node even if the wall clock steps back.
///
/// The clock is bounded: it never runs more than `maxAheadMillis` ahead of this node's wall
/// clock, whatever it is shown. A stamp received from a peer moves it only within that
/// bound (`observe` ignores stamps beyond it: replication refuses such revisions before
/// they get here), and every increment saturates instead of trapping.
public final class HybridLogicalClock: Sendable {
    private let last: Mutex<Int64>
    private let wallClock: @Sendable () -> Int64
    /// How far ahead of the wall clock a stamp may be (`OSC_CLUSTER_MAX_CLOCK_SKEW`).
    public let maxAheadMillis: Int64

    /// The largest wall-clock part a stamp can carry (48 bits of milliseconds).
    public static let maxMillis: Int64 = (Int64(1) << 47) - 1

    public init(
        startingAfter stamp: Int64 = 0,
        maxAheadMillis: Int64 = 5000,
        wallClockMillis: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) {
        wallClock = wallClockMillis
        self.maxAheadMillis = max(0, maxAheadMillis)
        last = Mutex(0)
        // A stored stamp beyond the bound (written before the bound existed) does not drag the clock.
        last.withLock { $0 = min(max(0, stamp), self.ceiling() & ~0xFFFF) }
    }

    /// The wall clock now, in milliseconds since 1970, clamped to what a stamp can carry.
    public func wallMillis() -> Int64 { min(max(0, wallClock()), Self.maxMillis) }

    /// The largest stamp this clock accepts now: its wall clock plus `maxAheadMillis`, last counter value.
    public func ceiling() -> Int64 {
        let millis = min(wallMillis().addingReportingOverflow(maxAheadMillis).partialValue, Self.maxMillis)
        return (millis << 16) | 0xFFFF
    }

    /// A stamp greater than every stamp this clock has issued or observed.
    public func now() -> Int64 { stamp(after: nil) }

    /// A stamp for a local write superseding `previous`, or nil when `previous` is at or beyond
    /// the clock's bound (the write would carry a stamp peers refuse, and would drag the clock):
    /// such a write must wait until the wall clock catches up.
    public func boundedStamp(after previous: Int64?) -> Int64? {
        if let previous, previous >= ceiling() { return nil }
        return stamp(after: previous)
    }

    /// A stamp greater than every stamp this clock issued or observed and than `previous`
    /// (the revision a local write supersedes), saturating at `Int64.max`.
    public func stamp(after previous: Int64?) -> Int64 {
        let physical = wallMillis() << 16
        return last.withLock { last in
            let floor = max(last, previous ?? Int64.min)
            let (next, overflow) = floor.addingReportingOverflow(1)
            last = max(physical, overflow ? Int64.max : next)
            return last
        }
    }

    /// Moves the clock past a stamp received from another node, if the stamp is within the
    /// bound; returns false (and leaves the clock alone) if it is not.
    @discardableResult
    public func observe(_ stamp: Int64) -> Bool {
        guard stamp <= ceiling() else { return false }
        last.withLock { $0 = max($0, stamp) }
        return true
    }

    /// Milliseconds since 1970 encoded in a stamp.
    public static func millis(of stamp: Int64) -> Int64 { stamp >> 16 }
}
