import Foundation
import Logging
import PostgresNIO
import SecureConfStore

/// One open transaction of a `PostgresStore` and what the storage protocol's operations do
/// inside it: the current entry, a revision recorded with its pruning, version counts, past
/// states and audit records. Lives only as long as the closure it is handed to.
final class PostgresTransaction: @unchecked Sendable {
    let connection: PostgresConnection
    let logger: Logger
    /// Revisions kept per key (`OSC_MAX_VERSIONS`); nil keeps all.
    var keep: Int?

    init(_ connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    func query(_ query: PostgresQuery) async throws -> PostgresRowSequence {
        try await connection.query(query, logger: logger)
    }

    /// Runs a statement whose rows are not wanted, to its end: the driver answers `query`
    /// before the statement has run, and an error it meets later (a refused lock, a full
    /// NOTIFY queue) is lost with a result left unread, leaving the transaction aborted for a
    /// COMMIT that PostgreSQL then answers with ROLLBACK.
    func execute(_ query: PostgresQuery) async throws {
        try await connection.execute(query, logger: logger)
    }

    private func one<T: PostgresDecodable & Sendable>(_ type: T.Type, _ q: PostgresQuery) async throws -> T? {
        var value: T?
        for try await v in try await query(q).decode(T.self) { value = v }
        return value
    }

    /// Takes the write lock: the `last_seq` row, held to commit. Every write of every node
    /// takes it first, so what a write reads after it is everything committed before.
    func lockWrites() async throws {
        try await execute("SELECT value FROM counters WHERE name = 'last_seq' FOR UPDATE")
    }

    /// The current entry of (environment, key), deleted or not.
    func current(_ environment: String, _ key: String) async throws -> ConfigEntry? {
        try await PostgresStore.entries(
            query("SELECT \(unescaped: PostgresStore.entryColumns) FROM entries WHERE environment = \(environment) AND key = \(key)")
        ).first
    }

    /// Appends `r` to history under the next sequence number, prunes its key, and makes it
    /// the current entry in place of `current`.
    func record(_ r: Revision, replacing current: ConfigEntry?) async throws -> ConfigEntry {
        guard let seq = try await one(Int64.self, "UPDATE counters SET value = value + 1 WHERE name = 'last_seq' RETURNING value") else {
            throw StoreError.unavailable("sequence counter missing")
        }
        try await execute(
            """
            INSERT INTO revisions(seq, \(unescaped: PostgresStore.revisionColumns))
            VALUES (\(seq), \(r.environment), \(r.key), \(r.category), \(r.ciphertext), \(r.hlc), \(r.origin), \(r.deleted),
                    \(r.createdAt), \(r.updatedAt), \(r.actor), \(r.purgesThrough?.hlc), \(r.purgesThrough?.origin))
            """
        )
        try await prune(r.environment, r.key)
        let id: Int64
        if let current {
            id = current.id
            try await execute(
                """
                UPDATE entries SET category = \(r.category), ciphertext = \(r.ciphertext), hlc = \(r.hlc), origin = \(r.origin),
                  deleted = \(r.deleted), created_at = \(r.createdAt), updated_at = \(r.updatedAt) WHERE id = \(id)
                """
            )
        } else {
            guard
                let new = try await one(
                    Int64.self,
                    """
                    INSERT INTO entries(environment, key, category, ciphertext, hlc, origin, deleted, created_at, updated_at)
                    VALUES (\(r.environment), \(r.key), \(r.category), \(r.ciphertext), \(r.hlc), \(r.origin), \(r.deleted), \(r.createdAt), \(r.updatedAt))
                    RETURNING id
                    """
                )
            else { throw StoreError.unavailable("entry id missing") }
            id = new
        }
        return ConfigEntry(r, id: id)
    }

    /// Drops the key's revisions up to the furthest purge bound among them, then the oldest
    /// beyond the newest `keep`, remembering their identities (`pruned_revisions`) so that
    /// version numbers stay put. The current revision is the newest and is never dropped.
    func prune(_ environment: String, _ key: String) async throws {
        var surplus: [(seq: Int64, hlc: Int64, origin: String, deleted: Bool)] = []
        // One statement at a time on a connection: each result is read whole before the next.
        var bounds: [(Int64, String)] = []
        for try await bound in try await query(
            """
            SELECT purges_through_hlc, purges_through_origin FROM revisions
            WHERE environment = \(environment) AND key = \(key) AND purges_through_hlc IS NOT NULL
            ORDER BY purges_through_hlc DESC, purges_through_origin DESC LIMIT 1
            """
        ).decode((Int64, String).self) {
            bounds.append(bound)
        }
        for (hlc, origin) in bounds {
            for try await row in try await query(
                """
                SELECT seq, hlc, origin, deleted FROM revisions WHERE environment = \(environment) AND key = \(key)
                AND (hlc < \(hlc) OR (hlc = \(hlc) AND origin <= \(origin)))
                """
            ).decode((Int64, Int64, String, Bool).self) {
                surplus.append(row)
            }
        }
        if let keep {
            let seen = Set(surplus.map(\.seq))
            for try await row in try await query(
                """
                SELECT seq, hlc, origin, deleted FROM revisions WHERE environment = \(environment) AND key = \(key)
                ORDER BY hlc DESC, origin DESC OFFSET \(max(1, keep))
                """
            ).decode((Int64, Int64, String, Bool).self) where !seen.contains(row.0) {
                surplus.append(row)
            }
        }
        for s in surplus {
            try await execute(
                """
                INSERT INTO pruned_revisions(environment, key, hlc, origin, deleted, seq)
                VALUES (\(environment), \(key), \(s.hlc), \(s.origin), \(s.deleted), \(s.seq)) ON CONFLICT DO NOTHING
                """
            )
            try await execute("DELETE FROM revisions WHERE seq = \(s.seq)")
            try await execute("UPDATE counters SET value = GREATEST(value, \(s.seq)) WHERE name = 'pruned_through_seq'")
        }
    }

    func prunedCount(_ environment: String, _ key: String) async throws -> Int {
        Int(try await one(Int64.self, "SELECT COUNT(*) FROM pruned_revisions WHERE environment = \(environment) AND key = \(key)") ?? 0)
    }

    func versionCount(_ environment: String, _ key: String) async throws -> Int {
        let retained = try await one(Int64.self, "SELECT COUNT(*) FROM revisions WHERE environment = \(environment) AND key = \(key)") ?? 0
        return Int(retained) + (try await prunedCount(environment, key))
    }

    /// What (environment, key) was at `micros`, by the rule SQLite's store follows: the newest
    /// revision whose origin wall time is at most `micros`.
    func pastState(_ environment: String, _ key: String, atOrBeforeMicros micros: Int64) async throws -> PastState {
        if let revision = try await PostgresStore.revisions(
            query(
                """
                SELECT \(unescaped: PostgresStore.revisionColumns) FROM revisions WHERE environment = \(environment) AND key = \(key)
                AND updated_at <= \(micros) ORDER BY hlc DESC, origin DESC LIMIT 1
                """
            )
        ).first {
            return revision.deleted ? .deleted(revision) : .live(revision)
        }
        let hlcLimit = HybridLogicalClock.latestStamp(atOrBeforeMicros: micros)
        if let prunedDeleted = try await one(
            Bool.self,
            """
            SELECT deleted FROM pruned_revisions WHERE environment = \(environment) AND key = \(key) AND hlc <= \(hlcLimit)
            ORDER BY hlc DESC, origin DESC LIMIT 1
            """
        ) {
            return prunedDeleted ? .deleted(nil) : .pruned
        }
        return .absent
    }

    static let auditColumns = "id, time, node_id, actor, client, action, environment, key, outcome, status, request_id, hash"

    /// Appends `drafts` in order, chained on the head, which this locks until commit: one
    /// chain for every node on the database.
    func appendAudits(_ drafts: [AuditRecordDraft]) async throws -> [AuditRecord] {
        var head: (Int64, String)?
        for try await h in try await query("SELECT last_id, hash FROM audit_head WHERE singleton = 1 FOR UPDATE").decode((Int64, String).self) {
            head = h
        }
        guard var (lastID, previous) = head else { throw StoreError.unavailable("audit head missing") }
        var records: [AuditRecord] = []
        for draft in drafts {
            let id = lastID + 1
            let hash = AuditChain.hash(previousHex: previous, id: id, draft)
            try await execute(
                """
                INSERT INTO audit_log(\(unescaped: Self.auditColumns))
                VALUES (\(id), \(draft.time), \(draft.nodeID), \(draft.actor), \(draft.client), \(draft.action), \(draft.environment),
                        \(draft.key), \(draft.outcome), \(draft.status), \(draft.requestID), \(hash))
                """
            )
            records.append(AuditRecord(id: id, draft: draft, hash: hash))
            (lastID, previous) = (id, hash)
        }
        try await execute("UPDATE audit_head SET last_id = \(lastID), hash = \(previous) WHERE singleton = 1")
        return records
    }

    static func auditRecords(_ rows: PostgresRowSequence) async throws -> [AuditRecord] {
        var out: [AuditRecord] = []
        for try await row in rows {
            let c = row.makeRandomAccess()
            out.append(
                AuditRecord(
                    id: try c[0].decode(Int64.self),
                    draft: AuditRecordDraft(
                        time: try c[1].decode(Int64.self),
                        nodeID: try c[2].decode(String.self),
                        actor: try c[3].decode(String.self),
                        client: try c[4].decode(String.self),
                        action: try c[5].decode(String.self),
                        environment: try c[6].decode(String?.self),
                        key: try c[7].decode(String?.self),
                        outcome: try c[8].decode(String.self),
                        status: Int(try c[9].decode(Int64.self)),
                        requestID: try c[10].decode(String.self)
                    ),
                    hash: try c[11].decode(String.self)
                )
            )
        }
        return out
    }
}

extension PostgresConnection {
    /// A statement run to its end, its rows (if any) read and dropped (`PostgresTransaction.execute`).
    func execute(_ query: PostgresQuery, logger: Logger) async throws {
        for try await _ in try await self.query(query, logger: logger) {}
    }
}

extension PostgresClient {
    /// A statement run to its end, its rows (if any) read and dropped (`PostgresTransaction.execute`).
    func execute(_ query: PostgresQuery) async throws {
        for try await _ in try await self.query(query) {}
    }
}
