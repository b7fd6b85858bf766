import Foundation

/// UTC times as text, for every place that writes one (responses, logs, backups).
public enum Timestamp {
    /// `2025-01-31T12:00:00.123456Z`: naive UTC ISO 8601 with microseconds and a `Z`, as
    /// OpenSecureConf's responses write times.
    public static func iso8601(micros: Int64) -> String {
        clock(micros) + String(format: ".%06dZ", Int32(micros % 1_000_000))
    }

    /// Python's `datetime.isoformat()` of a naive UTC time (what OpenSecureConf stores and puts
    /// in its backups, before its "Z"): microseconds only when there are any, no zone.
    public static func python(micros: Int64) -> String {
        let fraction = Int32(micros % 1_000_000)
        return fraction == 0 ? clock(micros) : clock(micros) + String(format: ".%06d", fraction)
    }

    /// Now, as `iso8601`.
    public static func now() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        return iso8601(micros: Int64(tv.tv_sec) * 1_000_000 + Int64(tv.tv_usec))
    }

    private static func clock(_ micros: Int64) -> String {
        var seconds = time_t(micros / 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d",
            parts.tm_year + 1900,
            parts.tm_mon + 1,
            parts.tm_mday,
            parts.tm_hour,
            parts.tm_min,
            parts.tm_sec
        )
    }
}
