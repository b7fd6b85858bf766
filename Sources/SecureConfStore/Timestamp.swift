import Foundation

/// UTC times as text, for every place that writes one (responses, logs, backups).
public enum Timestamp {
    /// `2025-01-31T12:00:00.123456Z`: naive UTC ISO 8601 with microseconds and a `Z`, as
    /// OpenSecureConf's responses write times.
    public static func iso8601(micros: Int64) -> String {
        format(micros, fraction: true, zone: true)
    }

    /// Python's `datetime.isoformat()` of a naive UTC time (what OpenSecureConf stores and puts
    /// in its backups, before its "Z"): microseconds only when there are any, no zone.
    public static func python(micros: Int64) -> String {
        format(micros, fraction: micros % 1_000_000 != 0, zone: false)
    }

    /// Now, as `iso8601`.
    public static func now() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        return iso8601(micros: Int64(tv.tv_sec) * 1_000_000 + Int64(tv.tv_usec))
    }

    /// Digits written by hand: `String(format:)` cost a warm read 4 % of its time (profile of issue 14).
    private static func format(_ micros: Int64, fraction: Bool, zone: Bool) -> String {
        var seconds = time_t(micros / 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(27)
        func digits(_ value: Int, _ width: Int) {
            var v = max(0, value)
            var buffer = [UInt8](repeating: UInt8(ascii: "0"), count: width)
            var i = width - 1
            while i >= 0 {
                buffer[i] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
                i -= 1
            }
            bytes.append(contentsOf: buffer)
        }
        digits(Int(parts.tm_year) + 1900, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        bytes.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
        if fraction {
            bytes.append(UInt8(ascii: "."))
            digits(Int(micros % 1_000_000), 6)
        }
        if zone { bytes.append(UInt8(ascii: "Z")) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
