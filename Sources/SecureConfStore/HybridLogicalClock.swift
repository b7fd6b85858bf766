import Foundation
import Synchronization

/// A hybrid logical clock: 48 bits of wall-clock milliseconds and 16 bits of logical
/// counter in one Int64, so stamps sort like integers, stay close to real time, and
/// always move forward on this node even if the wall clock steps back.
public final class HybridLogicalClock: Sendable {
    private let last: Mutex<Int64>
    private let wallClock: @Sendable () -> Int64

    public init(startingAfter stamp: Int64 = 0, wallClockMillis: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }) {
        last = Mutex(stamp)
        wallClock = wallClockMillis
    }

    /// A stamp greater than every stamp this clock has issued or observed.
    public func now() -> Int64 {
        let physical = wallClock() << 16
        return last.withLock { last in
            last = max(physical, last + 1)
            return last
        }
    }

    /// Moves the clock past a stamp received from another node.
    public func observe(_ stamp: Int64) {
        last.withLock { $0 = max($0, stamp) }
    }

    /// Milliseconds since 1970 encoded in a stamp.
    public static func millis(of stamp: Int64) -> Int64 { stamp >> 16 }
}
