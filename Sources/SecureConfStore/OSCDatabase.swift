import Foundation
import GRDB

/// An OpenSecureConf 2.x or 3.x database (`configurations`: `key`, the Fernet token in
/// `encrypted_value`, `category`, 3.x's `environment`, `created_at`, `updated_at` as
/// SQLAlchemy writes naive UTC times), read without writing to it.
public enum OSCDatabase {
    public struct Row: Sendable {
        public var id: Int64
        public var key: String
        public var ciphertext: String
        public var category: String?
        /// nil in a 2.x database (no environments).
        public var environment: String?
        public var createdAt: Int64?
        public var updatedAt: Int64?
    }

    public struct ReadError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Every row, in id order.
    public static func rows(at path: String) throws -> (version: String, rows: [Row]) {
        guard FileManager.default.isReadableFile(atPath: path) else { throw ReadError(description: "cannot read \(path)") }
        var configuration = Configuration()
        configuration.readonly = true
        let queue: DatabaseQueue
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw ReadError(description: "\(path) is not an SQLite database: \(error)")
        }
        return try queue.read { db in
            let columns = Set(try String.fetchAll(db, sql: "SELECT name FROM pragma_table_info('configurations')"))
            guard !columns.isEmpty else { throw ReadError(description: "\(path) has no configurations table: not an OpenSecureConf database") }
            let value = columns.contains("encrypted_value") ? "encrypted_value" : columns.contains("value") ? "value" : nil
            guard let value, columns.isSuperset(of: ["id", "key"]) else {
                throw ReadError(description: "\(path): the configurations table has no key or encrypted value column")
            }
            let hasEnvironment = columns.contains("environment")
            func optional(_ name: String) -> String { columns.contains(name) ? name : "NULL" }
            let sql = """
                SELECT id, key, \(value) AS token, \(optional("category")) AS category, \(hasEnvironment ? "environment" : "NULL") AS environment,
                       CAST(\(optional("created_at")) AS TEXT) AS created_at, CAST(\(optional("updated_at")) AS TEXT) AS updated_at
                FROM configurations ORDER BY id
                """
            let rows = try GRDB.Row.fetchAll(db, sql: sql).map { r -> Row in
                let token: String = (r["token"] as String?) ?? ((r["token"] as Data?).map { String(decoding: $0, as: UTF8.self) } ?? "")
                return Row(
                    id: r["id"],
                    key: r["key"],
                    ciphertext: token,
                    category: r["category"],
                    environment: r["environment"],
                    createdAt: (r["created_at"] as String?).flatMap(parseTime),
                    updatedAt: (r["updated_at"] as String?).flatMap(parseTime)
                )
            }
            return (hasEnvironment ? "3.x" : "2.x", rows)
        }
    }

    /// `YYYY-MM-DD HH:MM:SS[.ffffff]` (or with `T`, with an optional `Z`), naive UTC, as microseconds.
    static func parseTime(_ text: String) -> Int64? {
        let s = Array(text.utf8)
        guard s.count >= 19, s[4] == UInt8(ascii: "-"), s[7] == UInt8(ascii: "-"), s[10] == UInt8(ascii: " ") || s[10] == UInt8(ascii: "T"),
            s[13] == UInt8(ascii: ":"), s[16] == UInt8(ascii: ":")
        else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var n = 0
            for i in range {
                guard (0x30...0x39).contains(s[i]) else { return nil }
                n = n * 10 + Int(s[i] - 0x30)
            }
            return n
        }
        guard let y = number(0..<4), let mo = number(5..<7), let d = number(8..<10), let h = number(11..<13), let mi = number(14..<16),
            let se = number(17..<19), (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, se < 61
        else { return nil }
        var micros = 0
        var i = 19
        if i < s.count, s[i] == UInt8(ascii: ".") {
            i += 1
            var digits = 0
            while i < s.count, (0x30...0x39).contains(s[i]) {
                if digits < 6 { micros = micros * 10 + Int(s[i] - 0x30) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(digits, 6) { micros *= 10 }
        }
        if i < s.count, s[i] == UInt8(ascii: "Z") { i += 1 }
        guard i == s.count else { return nil }
        var parts = tm()
        parts.tm_year = Int32(y - 1900)
        parts.tm_mon = Int32(mo - 1)
        parts.tm_mday = Int32(d)
        parts.tm_hour = Int32(h)
        parts.tm_min = Int32(mi)
        parts.tm_sec = Int32(se)
        let seconds = timegm(&parts)
        return Int64(seconds) * 1_000_000 + Int64(micros)
    }
}
