import Foundation
import GRDB

/// One row of an OpenSecureConf database, as `secureconf import-osc` reads it.
public struct ImportedRow: Sendable {
    public var environment: String
    public var key: String
    public var category: String?
    /// OpenSecureConf's Fernet token, kept as it is (same salt, same user keys).
    public var ciphertext: String
    /// Microseconds since 1970 (OpenSecureConf's naive UTC times).
    public var createdAt: Int64
    public var updatedAt: Int64

    public init(environment: String, key: String, category: String?, ciphertext: String, createdAt: Int64, updatedAt: Int64) {
        self.environment = environment
        self.key = key
        self.category = category
        self.ciphertext = ciphertext
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

extension ConfigStore {
    public enum ImportOutcome: Sendable, Equatable {
        case imported
        /// The same token is already the current value (an earlier import).
        case alreadyThere
        /// The key holds another value here: left alone.
        case exists
    }

    /// Writes an OpenSecureConf row as a new key's first revision, stamped at the time its
    /// token was issued (never later than the row's `updated_at` allows), so that the
    /// revision passes every peer's `RevisionRules` like one written then; an existing key is
    /// left alone. Idempotent: a row already imported is `alreadyThere`.
    public func importRow(_ row: ImportedRow, issuedSeconds: UInt64) async throws -> ImportOutcome {
        let origin = nodeID
        let keep = maxVersions
        return try await commit(audit: nil) { db in
            // A key this store knows (live or deleted here) is left alone.
            if let current = try Self.currentRow(db, environment: row.environment, key: row.key) {
                return (!current.deleted && current.ciphertext == row.ciphertext ? .alreadyThere : .exists, 0)
            }
            // The stamp's wall-clock part: when the token was issued, or the row's update
            // time if that is later.
            let millis = max(Int64(clamping: issuedSeconds) * 1000, row.updatedAt / 1000)
            let hlc = (millis << 16) | 1
            let revision = Revision(
                environment: row.environment,
                key: row.key,
                category: row.category,
                ciphertext: row.ciphertext,
                hlc: hlc,
                origin: origin,
                deleted: false,
                createdAt: row.createdAt,
                updatedAt: max(row.updatedAt, row.createdAt),
                actor: nil
            )
            _ = try Self.record(revision, replacing: nil, keep: keep, db: db)
            return (.imported, 1)
        }
    }
}
