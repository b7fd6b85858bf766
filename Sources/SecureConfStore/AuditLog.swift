import Foundation
import GRDB
import SecureConfCrypto

/// What happened, by whom, to what, with what result: an audit record before it is
/// given its id and place in the chain. Never holds values, user keys or API keys.
public struct AuditRecordDraft: Sendable, Equatable {
    /// Microseconds since 1970.
    public var time: Int64
    public var nodeID: String
    public var actor: String
    public var client: String
    public var action: String
    public var environment: String?
    public var key: String?
    public var outcome: String
    public var status: Int
    public var requestID: String

    public init(
        time: Int64,
        nodeID: String,
        actor: String,
        client: String,
        action: String,
        environment: String?,
        key: String?,
        outcome: String,
        status: Int,
        requestID: String
    ) {
        self.time = time
        self.nodeID = nodeID
        self.actor = actor
        self.client = client
        self.action = action
        self.environment = environment
        self.key = key
        self.outcome = outcome
        self.status = status
        self.requestID = requestID
    }
}

/// One record of the audit trail as stored: the draft, its id (1, 2, 3, … with no gaps)
/// and `hash` = hex SHA-256(previous record's hash || `AuditChain.canonicalBytes`).
public struct AuditRecord: Sendable, Equatable, FetchableRecord {
    public var id: Int64
    public var draft: AuditRecordDraft
    public var hash: String

    public init(id: Int64, draft: AuditRecordDraft, hash: String) {
        self.id = id
        self.draft = draft
        self.hash = hash
    }

    /// Columns in `AuditRecord.columns` order.
    public init(row: Row) {
        id = row[0]
        draft = AuditRecordDraft(
            time: row[1],
            nodeID: row[2],
            actor: row[3],
            client: row[4],
            action: row[5],
            environment: row[6],
            key: row[7],
            outcome: row[8],
            status: row[9],
            requestID: row[10]
        )
        hash = row[11]
    }

    static let columns = "id, time, node_id, actor, client, action, environment, key, outcome, status, request_id, hash"
}

/// Which records a search or export wants; nil fields match everything.
public struct AuditFilter: Sendable, Equatable {
    public var key: String?
    public var environment: String?
    public var action: String?
    public var actor: String?
    public var outcome: String?
    /// Inclusive bounds, microseconds since 1970.
    public var since: Int64?
    public var until: Int64?
    /// Only this tenant's records (nil: every tenant's).
    public var tenant: String?

    public init(
        key: String? = nil,
        environment: String? = nil,
        action: String? = nil,
        actor: String? = nil,
        outcome: String? = nil,
        since: Int64? = nil,
        until: Int64? = nil
    ) {
        self.key = key
        self.environment = environment
        self.action = action
        self.actor = actor
        self.outcome = outcome
        self.since = since
        self.until = until
    }
}

/// The result of re-computing the whole chain.
public struct AuditVerification: Sendable, Equatable {
    public var valid: Bool
    /// Records read.
    public var records: Int
    /// The first id whose record is altered, missing or out of place; nil when valid.
    public var firstBroken: Int64?
    /// The head hash the chain ends with (anchor it elsewhere to detect a rewritten chain).
    public var headHash: String

    public init(valid: Bool, records: Int, firstBroken: Int64?, headHash: String) {
        self.valid = valid
        self.records = records
        self.firstBroken = firstBroken
        self.headHash = headHash
    }
}

/// The hash chain's definition, in one place, so that anyone can re-compute it from an export.
public enum AuditChain {
    /// The "previous hash" of record 1: 32 zero bytes.
    public static let genesisHex = String(repeating: "0", count: 64)

    /// `SCAUDIT1`, then each field as a 4-byte big-endian length and its UTF-8 bytes (0xFFFFFFFF
    /// and no bytes for null), in the order id, time (microseconds), node_id, actor, client,
    /// action, environment, key, outcome, status, request_id; numbers as decimal text.
    public static func canonicalBytes(id: Int64, _ d: AuditRecordDraft) -> [UInt8] {
        var out = Array("SCAUDIT1".utf8)
        func field(_ s: String?) {
            guard let s else {
                out.append(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF])
                return
            }
            let bytes = Array(s.utf8)
            let n = UInt32(truncatingIfNeeded: bytes.count)
            out.append(contentsOf: [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)])
            out.append(contentsOf: bytes)
        }
        field(String(id)); field(String(d.time)); field(d.nodeID); field(d.actor); field(d.client); field(d.action)
        field(d.environment); field(d.key); field(d.outcome); field(String(d.status)); field(d.requestID)
        return out
    }

    /// hex SHA-256(previous hash bytes || canonical bytes).
    public static func hash(previousHex: String, id: Int64, _ draft: AuditRecordDraft) -> String {
        var input = Hex.decode(previousHex) ?? [UInt8](repeating: 0, count: 32)
        input.append(contentsOf: canonicalBytes(id: id, draft))
        return Hex.encode(OpenSSL.sha256(input))
    }
}

/// Re-computes a chain fed its records in id order: ids must run 1…N without gaps, every
/// hash must equal SHA-256(previous hash || record), and the head must name the last record
/// and its hash (so a truncated tail is caught too).
public struct AuditChainVerifier: Sendable {
    private var previous = AuditChain.genesisHex
    private var expectedID: Int64 = 1
    private var count = 0
    private var firstBroken: Int64?

    public init() {}

    /// The next record by id; `intact` false when storage shows it altered (a column of the
    /// wrong type).
    public mutating func add(_ record: AuditRecord, intact: Bool = true) {
        count += 1
        if firstBroken != nil { return }
        if !intact {
            firstBroken = record.id
            return
        }
        if record.id != expectedID {
            firstBroken = expectedID
            return
        }
        let recomputed = AuditChain.hash(previousHex: previous, id: record.id, record.draft)
        if recomputed != record.hash {
            firstBroken = record.id
            return
        }
        previous = recomputed
        expectedID += 1
    }

    public func result(headID: Int64, headHash: String) -> AuditVerification {
        var firstBroken = self.firstBroken
        let lastIntact = expectedID - 1
        if firstBroken == nil {
            if lastIntact < headID {
                firstBroken = lastIntact + 1  // records at the end are gone
            } else if lastIntact > headID {
                firstBroken = headID + 1  // records were added outside the store
            } else if previous != headHash {
                firstBroken = max(headID, 1)  // the head itself was altered
            }
        }
        return AuditVerification(valid: firstBroken == nil, records: count, firstBroken: firstBroken, headHash: headHash)
    }
}

/// Lower-case hexadecimal.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out = [UInt8]()
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let h = value(chars[i]), let l = value(chars[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        return out
    }
}

extension ConfigStore {
    /// Appends one record to the audit trail; returns once it is durable. Records appended
    /// together (the reads of many clients) share one savepoint and one update of the head.
    @discardableResult
    public func appendAudit(_ draft: AuditRecordDraft) async throws -> AuditRecord {
        try await writer.submitAudit(draft)
    }

    /// Appends within the caller's transaction: id = head + 1, hash chained on the head's hash.
    static func appendAudit(_ draft: AuditRecordDraft, db: Database) throws -> AuditRecord {
        guard let record = try appendAudits([draft], db: db).first else { throw StoreError.unavailable("audit head missing") }
        return record
    }

    /// Appends `drafts` in order, each its own record chained on the one before, with one read
    /// and one update of the head.
    static func appendAudits(_ drafts: [AuditRecordDraft], db: Database) throws -> [AuditRecord] {
        guard let head = try Row.fetchOne(db.cachedStatement(sql: "SELECT last_id, hash FROM audit_head WHERE singleton = 1")) else {
            throw StoreError.unavailable("audit head missing")
        }
        var lastID: Int64 = head[0]
        var previous: String = head[1]
        let insert = try db.cachedStatement(
            sql: """
                INSERT INTO audit_log(id, time, node_id, actor, client, action, environment, key, outcome, status, request_id, hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        )
        var records: [AuditRecord] = []
        records.reserveCapacity(drafts.count)
        for draft in drafts {
            let id = lastID + 1
            let hash = AuditChain.hash(previousHex: previous, id: id, draft)
            try insert.execute(arguments: [
                id, draft.time, draft.nodeID, draft.actor, draft.client, draft.action, draft.environment, draft.key,
                draft.outcome, draft.status, draft.requestID, hash,
            ])
            records.append(AuditRecord(id: id, draft: draft, hash: hash))
            lastID = id
            previous = hash
        }
        try db.cachedStatement(sql: "UPDATE audit_head SET last_id = ?, hash = ? WHERE singleton = 1").execute(arguments: [lastID, previous])
        return records
    }

    /// Records matching `filter` with id > `afterID`, oldest first, at most `limit`.
    public func auditRecords(_ filter: AuditFilter, afterID: Int64? = nil, limit: Int) async throws -> [AuditRecord] {
        try await pool.read { db in
            var sql = "SELECT \(AuditRecord.columns) FROM audit_log WHERE 1 = 1"
            var arguments: StatementArguments = []
            if let v = filter.key { sql += " AND key = ?"; arguments += [v] }
            if let v = filter.environment {
                sql += " AND environment = ?"
                arguments += [filter.tenant.map { TenantNames.stored(tenant: $0, environment: v) } ?? v]
            }
            if let tenant = filter.tenant {
                if tenant == Revision.defaultTenant {
                    sql += " AND (environment IS NULL OR substr(environment, 1, 1) <> char(2))"
                } else {
                    sql += " AND environment >= ? AND environment < ?"
                    arguments += [TenantNames.stored(tenant: tenant, environment: ""), "\u{2}\(tenant)\u{3}"]
                }
            }
            if let v = filter.action { sql += " AND action = ?"; arguments += [v] }
            if let v = filter.actor { sql += " AND actor = ?"; arguments += [v] }
            if let v = filter.outcome { sql += " AND outcome = ?"; arguments += [v] }
            if let v = filter.since { sql += " AND time >= ?"; arguments += [v] }
            if let v = filter.until { sql += " AND time <= ?"; arguments += [v] }
            if let v = afterID { sql += " AND id > ?"; arguments += [v] }
            sql += " ORDER BY id LIMIT ?"
            arguments += [limit]
            return try AuditRecord.fetchAll(db, sql: sql, arguments: arguments)
        }
    }

    /// Re-computes the chain over one consistent snapshot: ids must run 1…N without gaps,
    /// every hash must equal SHA-256(previous hash || record), and the head must name the
    /// last record and its hash (so a truncated tail is caught too).
    public func verifyAudit() async throws -> AuditVerification {
        try await pool.read { db in try Self.verifyAuditChain(db) }
    }

    /// Re-computes the chain of the audit log in `db` (a store, or a snapshot of one).
    static func verifyAuditChain(_ db: Database) throws -> AuditVerification {
        do {
            guard let head = try Row.fetchOne(db, sql: "SELECT last_id, hash FROM audit_head WHERE singleton = 1") else {
                return AuditVerification(valid: false, records: 0, firstBroken: 1, headHash: AuditChain.genesisHex)
            }
            let headID: Int64 = head[0]
            let headHash: String = head[1]
            // A column rewritten with another type (a BLOB where text belongs) reads back as the
            // same text but escapes searches: such a record is broken too.
            let mistyped = Set(
                try Int64.fetchAll(
                    db,
                    sql: """
                        SELECT id FROM audit_log
                        WHERE typeof(time) != 'integer' OR typeof(node_id) != 'text' OR typeof(actor) != 'text' OR typeof(client) != 'text'
                           OR typeof(action) != 'text' OR typeof(environment) NOT IN ('text', 'null') OR typeof(key) NOT IN ('text', 'null')
                           OR typeof(outcome) != 'text' OR typeof(status) != 'integer' OR typeof(request_id) != 'text' OR typeof(hash) != 'text'
                        """
                )
            )
            var verifier = AuditChainVerifier()
            let cursor = try AuditRecord.fetchCursor(db, sql: "SELECT \(AuditRecord.columns) FROM audit_log ORDER BY id")
            while let record = try cursor.next() { verifier.add(record, intact: !mistyped.contains(record.id)) }
            return verifier.result(headID: headID, headHash: headHash)
        }
    }

    /// Records in the audit trail (the head's count).
    public func auditRecordCount() async throws -> Int64 {
        try await pool.read { db in try Int64.fetchOne(db, sql: "SELECT last_id FROM audit_head WHERE singleton = 1") ?? 0 }
    }
}
