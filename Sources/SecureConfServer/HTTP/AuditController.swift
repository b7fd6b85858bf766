import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SecureConfCore
import SecureConfJSON
import SecureConfStore

/// `/audit`: search, export (JSON Lines or CSV, streamed) and chain verification. Guarded by
/// `AuditAdminMiddleware` (the API key).
struct AuditController<Context: AuditedRequestContext>: Sendable {
    let node: SecureConfNode

    static var pageSize: Int { 1000 }

    /// The filter named by the query (`key`, `environment`, `action`, `actor`, `outcome`,
    /// `since`, `until`; times in RFC 3339).
    static func filter(_ query: [String: String]) throws(ServiceError) -> AuditFilter {
        func text(_ name: String) -> String? { query[name].flatMap { $0.isEmpty ? nil : $0 } }
        func time(_ name: String) throws(ServiceError) -> Int64? {
            guard let raw = text(name) else { return nil }
            guard let micros = RFC3339.parseMicros(raw) else {
                throw ServiceError.unprocessable("\(name) must be an RFC 3339 time such as 2025-01-31T12:00:00Z")
            }
            return micros
        }
        return AuditFilter(
            key: text("key"),
            environment: text("environment"),
            action: text("action"),
            actor: text("actor"),
            outcome: text("outcome"),
            since: try time("since"),
            until: try time("until")
        )
    }

    /// Whose records a reader sees: a tenant's principal, its tenant's only; the default
    /// tenant's administrators (and the API key), every tenant's, or one named by `tenant`.
    static func tenant(_ query: [String: String], _ context: Context) throws(ServiceError) -> String? {
        if let principal = context.principal, principal.tenant != Revision.defaultTenant { return principal.tenant }
        guard let named = query["tenant"], !named.isEmpty else { return nil }
        if let problem = TenantNames.problem(named), named != Revision.defaultTenant { throw ServiceError.unprocessable(problem) }
        return named
    }

    /// `{"records":[...],"next_cursor":"<id>"|null}`, oldest first; `limit` 1–1000 (default
    /// 100); pass `next_cursor` back as `cursor` for the next page.
    @Sendable func search(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        var filter = try Self.filter(query)
        filter.tenant = try Self.tenant(query, context)
        var limit = 100
        if let raw = query["limit"], !raw.isEmpty {
            guard let n = Int(raw), (1...Self.pageSize).contains(n) else {
                throw ServiceError.unprocessable("limit must be a whole number in 1...\(Self.pageSize)")
            }
            limit = n
        }
        var cursor: Int64?
        if let raw = query["cursor"], !raw.isEmpty {
            guard let n = Int64(raw), n >= 0 else { throw ServiceError.unprocessable("cursor must be a next_cursor value returned by /audit") }
            cursor = n
        }
        let records = try await node.store.auditRecords(filter, afterID: cursor, limit: limit)
        return JSONResponse.make { w in
            w.raw("{")
            w.member("records", first: true); w.raw("[")
            for (i, record) in records.enumerated() {
                if i > 0 { w.raw(",") }
                w.auditRecord(record)
            }
            w.raw("]")
            w.member("next_cursor")
            w.optionalString(records.count == limit ? records.last.map { String($0.id) } : nil)
            w.raw("}")
        }
    }

    /// Every record matching `since`/`until` (and the search filters), streamed as JSON
    /// Lines (`format=jsonl`, the default) or CSV with a header row (`format=csv`). The
    /// export stops at the last record committed when it began.
    @Sendable func export(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        var filtered = try Self.filter(query)
        filtered.tenant = try Self.tenant(query, context)
        let filter = filtered
        let format = query["format"].flatMap { $0.isEmpty ? nil : $0.lowercased() } ?? "jsonl"
        guard format == "jsonl" || format == "csv" else { throw ServiceError.unprocessable("format must be jsonl or csv") }
        let last = try await node.store.auditRecordCount()
        let store = node.store
        let csv = format == "csv"
        let body = ResponseBody { writer in
            if csv { try await writer.write(ByteBuffer(string: AuditCSV.header)) }
            var after: Int64 = 0
            while after < last {
                let page = try await store.auditRecords(filter, afterID: after, limit: Self.pageSize).filter { $0.id <= last }
                guard let tail = page.last else { break }
                var text = [UInt8]()
                text.reserveCapacity(page.count * 300)
                for record in page {
                    if csv {
                        text.append(contentsOf: AuditCSV.row(record).utf8)
                    } else {
                        var w = JSONWriter(capacity: 300)
                        w.auditRecord(record)
                        text.append(contentsOf: w.bytes)
                        text.append(0x0A)
                    }
                }
                try await writer.write(ByteBuffer(bytes: text))
                after = tail.id
                if page.count < Self.pageSize { break }
            }
            try await writer.finish(nil)
        }
        let headers: HTTPFields = [
            .contentType: csv ? "text/csv; charset=utf-8" : "application/x-ndjson",
            .contentDisposition: "attachment; filename=audit.\(format)",
        ]
        return Response(status: .ok, headers: headers, body: body)
    }

    /// `{"valid","records","first_broken","head_hash"}`: the whole chain re-computed.
    @Sendable func verify(_ request: Request, context: Context) async throws -> Response {
        // The chain spans every tenant (its length and head say how much happened).
        if let principal = context.principal, principal.tenant != Revision.defaultTenant {
            throw ServiceError(.forbidden, "the audit chain spans every tenant: only the default tenant's administrators verify it")
        }
        let result = try await node.store.verifyAudit()
        if !result.valid {
            node.metrics.auditVerificationFailures.increment()
            context.logger.warning(
                "audit chain verification failed",
                metadata: [
                    "records": "\(result.records)", "first_broken": "\(result.firstBroken.map(String.init) ?? "-")",
                ]
            )
        }
        return JSONResponse.make { w in
            w.raw("{")
            w.member("valid", first: true); w.raw(result.valid ? "true" : "false")
            w.member("records"); w.integer(result.records)
            w.member("first_broken")
            if let id = result.firstBroken { w.integer(id) } else { w.raw("null") }
            w.member("head_hash"); w.string(result.headHash)
            w.raw("}")
        }
    }
}

extension JSONWriter {
    /// `{"id","time","node_id","actor","client","action","environment","key","outcome","status","request_id","hash"}`.
    mutating func auditRecord(_ record: AuditRecord) {
        let d = record.draft
        raw("{")
        member("id", first: true); integer(record.id)
        member("time"); string(Timestamp.iso8601(micros: d.time))
        member("node_id"); string(d.nodeID)
        member("actor"); string(d.actor)
        member("client"); string(d.client)
        member("action"); string(d.action)
        member("environment"); optionalString(d.environment)
        // Another tenant's record: its environment as stored (and hashed), and its tenant.
        if let stored = d.environment, stored.hasPrefix("\u{2}") {
            member("tenant"); string(TenantNames.split(stored).tenant)
        }
        member("key"); optionalString(d.key)
        member("outcome"); string(d.outcome)
        member("status"); integer(d.status)
        member("request_id"); string(d.requestID)
        member("hash"); string(record.hash)
        raw("}")
    }
}

/// Audit records as RFC 4180 CSV. A cell that a spreadsheet would run as a formula (starting
/// with `=`, `+`, `-`, `@`, tab or carriage return) is prefixed with `'`.
enum AuditCSV {
    static let header = "id,time,node_id,actor,client,action,environment,key,outcome,status,request_id,hash\r\n"

    static func row(_ record: AuditRecord) -> String {
        let d = record.draft
        let cells = [
            String(record.id), Timestamp.iso8601(micros: d.time), d.nodeID, d.actor, d.client, d.action, d.environment ?? "",
            d.key ?? "", d.outcome, String(d.status), d.requestID, record.hash,
        ]
        return cells.map(cell).joined(separator: ",") + "\r\n"
    }

    static func cell(_ value: String) -> String {
        var v = value
        if let first = v.unicodeScalars.first, "=+-@\t\r".unicodeScalars.contains(first) { v = "'" + v }
        guard v.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return v }
        return "\"" + v.replacing("\"", with: "\"\"") + "\""
    }
}
