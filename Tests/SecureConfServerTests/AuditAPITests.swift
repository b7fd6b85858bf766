import Foundation
import GRDB
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import SecureConfServer

let adminKey = "audit-admin-key-123"

/// RFC 4180 rows: quoted cells may hold commas, quotes (doubled) and line breaks.
func parseCSV(_ text: String) -> [[String]] {
    var rows: [[String]] = []
    var row: [String] = []
    var cell = ""
    var quoted = false
    var scalars = Array(text.unicodeScalars)[...]
    while let c = scalars.popFirst() {
        if quoted {
            if c == "\"" {
                if scalars.first == "\"" { cell.unicodeScalars.append("\""); scalars = scalars.dropFirst() } else { quoted = false }
            } else {
                cell.unicodeScalars.append(c)
            }
            continue
        }
        switch c {
        case "\"": quoted = true
        case ",": row.append(cell); cell = ""
        case "\r": continue
        case "\n": row.append(cell); rows.append(row); row = []; cell = ""
        default: cell.unicodeScalars.append(c)
        }
    }
    if !cell.isEmpty || !row.isEmpty { row.append(cell); rows.append(row) }
    return rows
}

extension TestClientProtocol {
    func audit(_ query: String) async throws -> [[String: Any]] {
        let reply = try await send(.get, "/audit?\(query)", userKey: nil, apiKey: adminKey)
        #expect(reply.status == .ok, "\(reply.body)")
        return reply.object["records"] as? [[String: Any]] ?? []
    }
}

@Suite struct AuditAPITests {
    static let recordFields: Set<String> = [
        "id", "time", "node_id", "actor", "client", "action", "environment", "key", "outcome", "status",
        "request_id", "hash",
    ]

    @Test func searchByKeyShowsEveryStepIncludingFailures() async throws {
        try await TestNode({ $0.apiKey = adminKey }).run { (client: any TestClientProtocol) async throws in
            #expect(try await client.send(.post, "/configs", body: #"{"key":"k","value":"v1"}"#).status == .created)
            #expect(try await client.send(.put, "/configs/k", body: #"{"value":"v2"}"#).status == .ok)
            #expect(try await client.send(.get, "/configs/k", userKey: "a-wrong-user-key").status == .unauthorized)
            #expect(try await client.send(.delete, "/configs/k").status == .ok)
            let tagged = try await client.send(.post, "/configs/k/rollback?version=1", headers: [HTTPField.Name("X-Request-ID")!: "rollback-42"])
            #expect(tagged.status == .ok && tagged.headers[HTTPField.Name("X-Request-ID")!] == "rollback-42")
            #expect(try await client.send(.get, "/configs/missing").status == .notFound)
            #expect(try await client.send(.post, "/configs", body: #"{"key":"bad/key","value":1}"#).status == .unprocessableContent)

            let records = try await client.audit("key=k")
            #expect(records.map { $0["action"] as? String } == ["create", "update", "read", "delete", "rollback"])
            #expect(records.map { $0["status"] as? Int } == [201, 200, 401, 200, 200])
            #expect(records.map { $0["outcome"] as? String } == ["success", "success", "denied", "success", "success"])
            #expect(records.allSatisfy { Set($0.keys) == Self.recordFields })
            #expect(records.allSatisfy { $0["node_id"] as? String == "127.0.0.1:9000" && $0["client"] as? String == "unknown" })
            #expect(records.allSatisfy { $0["environment"] as? String == "default" && ($0["hash"] as? String)?.count == 64 })
            #expect(records.allSatisfy { RFC3339.parseMicros($0["time"] as? String ?? "") != nil && !($0["request_id"] as? String ?? "").isEmpty })
            #expect(records.last?["request_id"] as? String == "rollback-42")
            let owner = try #require(records[0]["actor"] as? String)
            #expect(owner.hasPrefix("uk:") && owner.count == 15)
            #expect(records.filter { $0["actor"] as? String == owner }.count == 4)
            #expect(
                records[2]["actor"] as? String != owner && (records[2]["actor"] as? String)?.hasPrefix("uk:") == true,
                "the wrong key is its own actor"
            )

            let missing = try await client.audit("key=missing")
            #expect(missing.map { $0["status"] as? Int } == [404] && missing.first?["outcome"] as? String == "failure")
            let invalid = try await client.audit("action=create&outcome=failure")
            #expect(invalid.map { $0["key"] as? String } == ["bad/key"] && invalid.first?["status"] as? Int == 422)
            #expect(try await client.audit("action=rollback").count == 1)

            // Paging by cursor, filtering by actor.
            let page = try await client.send(.get, "/audit?actor=\(owner)&limit=2", userKey: nil, apiKey: adminKey).object
            #expect((page["records"] as? [Any])?.count == 2)
            let cursor = try #require(page["next_cursor"] as? String)
            let rest = try await client.audit("actor=\(owner)&limit=1000&cursor=\(cursor)")
            #expect(rest.count >= 2 && rest.allSatisfy { $0["actor"] as? String == owner })
            #expect(try await client.send(.get, "/audit?limit=1000", userKey: nil, apiKey: adminKey).object["next_cursor"] is NSNull)
            let later = try await client.audit("since=2999-01-01T00:00:00Z")
            #expect(later.isEmpty)
            #expect(try await client.send(.get, "/audit?since=soon", userKey: nil, apiKey: adminKey).status == .unprocessableContent)
        }
    }

    @Test func auditEndpointsRequireTheAPIKey() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            for path in ["/audit", "/audit/export", "/audit/verify"] {
                let reply = try await client.send(.get, path, apiKey: "anything")
                #expect(reply.status == .forbidden && reply.detail?.contains("audit requires OSC_API_KEY") == true, "\(path): \(reply.body)")
            }
        }
        try await TestNode({ $0.apiKey = adminKey }).run { (client: any TestClientProtocol) async throws in
            #expect(try await client.send(.get, "/audit", userKey: nil).status == .forbidden)
            #expect(try await client.send(.get, "/audit/verify", userKey: nil, apiKey: "not-the-admin-key").status == .forbidden)
            #expect(try await client.send(.get, "/configs", userKey: "correct-user-key").status == .ok, "data endpoints do not need it")
            let refused = try await client.audit("outcome=denied")
            #expect(refused.map { $0["action"] as? String } == ["audit_search", "audit_verify"])
            #expect(refused[0]["actor"] as? String == "anonymous")
            let wrong = try #require(refused[1]["actor"] as? String)
            let admin = try #require(try await client.audit("action=audit_search&outcome=success").first?["actor"] as? String)
            #expect(wrong.hasPrefix("ak:") && admin.hasPrefix("ak:") && wrong != admin)
            #expect(!refused.description.contains("not-the-admin-key"))
        }
        try await TestNode({
            $0.apiKey = adminKey; $0.apiKeyRequired = true
        }).run { (client: any TestClientProtocol) async throws in
            #expect(try await client.send(.get, "/configs").status == .forbidden)
            #expect(try await client.send(.get, "/cluster/status", userKey: nil, apiKey: "wrong").status == .forbidden)
            let refused = try await client.audit("outcome=denied")
            #expect(refused.map { $0["action"] as? String } == ["list", "cluster_status"])
            #expect(refused.map { $0["status"] as? Int } == [403, 403])
        }
    }

    @Test func exportsParseAndHoldNoSecrets() async throws {
        let secrets = ["correct-user-key", "plaintext-secret-value-42", adminKey, "someone-elses-key", "a-wrong-user-key"]
        try await TestNode({ $0.apiKey = adminKey }).run { (client: any TestClientProtocol) async throws in
            _ = try await client.send(.post, "/configs", body: #"{"key":"db","value":{"password":"plaintext-secret-value-42"}}"#)
            _ = try await client.send(.post, "/configs", body: #"{"key":"we,ird\"key","value":"plaintext-secret-value-42"}"#)
            _ = try await client.send(.get, "/configs/db")
            _ = try await client.send(.get, "/configs/db", userKey: "a-wrong-user-key")
            _ = try await client.send(.post, "/configs", userKey: "someone-elses-key", body: #"{"key":"db2","value":"plaintext-secret-value-42"}"#)
            _ = try await client.send(.get, "/configs/db/versions/1")
            _ = try await client.send(.get, "/configs/db/diff?from=1&to=1")

            let jsonl = try await client.send(.get, "/audit/export?format=jsonl", userKey: nil, apiKey: adminKey)
            #expect(jsonl.status == .ok && jsonl.headers[.contentType] == "application/x-ndjson")
            let lines = jsonl.body.split(separator: "\n").map(String.init)
            #expect(lines.count == 7)
            let records = lines.compactMap { parseJSON($0) as? [String: Any] }
            #expect(records.count == lines.count && records.allSatisfy { Set($0.keys) == Self.recordFields })
            #expect(records.map { $0["id"] as? Int } == Array(1...7).map { Optional($0) })

            let csv = try await client.send(.get, "/audit/export?format=csv", userKey: nil, apiKey: adminKey)
            #expect(csv.status == .ok && csv.headers[.contentType]?.hasPrefix("text/csv") == true)
            let rows = parseCSV(csv.body)
            #expect(
                rows.first == ["id", "time", "node_id", "actor", "client", "action", "environment", "key", "outcome", "status", "request_id", "hash"]
            )
            #expect(rows.count == 1 + 8, "the JSONL export's own record is in the CSV export")
            #expect(rows.dropFirst().allSatisfy { $0.count == 12 })
            #expect(rows[2][7] == #"we,ird"key"#, "quoted cells round-trip")
            #expect(rows.last?[5] == "audit_export")
            #expect(zip(rows.dropFirst(), records).allSatisfy { $0[11] == $1["hash"] as? String })

            for secret in secrets {
                #expect(!jsonl.body.contains(secret) && !csv.body.contains(secret), "\(secret) must not be exported")
            }
            let since = try #require(records.last?["time"] as? String)
            let recent = try await client.send(.get, "/audit/export?since=\(since)", userKey: nil, apiKey: adminKey)
            #expect(recent.body.split(separator: "\n").count == 3, "the last JSONL record, then the two export records")
            #expect(try await client.send(.get, "/audit/export?format=xml", userKey: nil, apiKey: adminKey).status == .unprocessableContent)

            let metrics = try await client.send(.get, "/metrics", userKey: nil)
            #expect(
                metrics.body.contains("osc_audit_records_total 11") && metrics.body.contains("osc_audit_verification_failures_total 0"),
                "\(metrics.body.split(separator: "\n").filter { $0.contains("audit_") && !$0.contains("#") })"
            )
            for secret in secrets { #expect(!metrics.body.contains(secret)) }
        }
    }

    @Test func verifyDetectsARecordAlteredWhileTheNodeWasStopped() async throws {
        let first = try TestNode { $0.apiKey = adminKey }
        try await first.run { (client: any TestClientProtocol) async throws in
            _ = try await client.send(.post, "/configs", body: #"{"key":"k","value":1}"#)
            _ = try await client.send(.put, "/configs/k", body: #"{"value":2}"#)
            _ = try await client.send(.get, "/configs/k")
            let verify = try await client.send(.get, "/audit/verify", userKey: nil, apiKey: adminKey).object
            #expect(verify["valid"] as? Bool == true && verify["records"] as? Int == 3 && verify["first_broken"] is NSNull)
        }
        // History and audit survive a restart.
        try await TestNode(directory: first.directory, { $0.apiKey = adminKey }).run { (client: any TestClientProtocol) async throws in
            #expect(try await client.audit("key=k").map { $0["action"] as? String } == ["create", "update", "read"])
            #expect((try await client.send(.get, "/configs/k/versions").object["versions"] as? [Any])?.count == 2)
            let verify = try await client.send(.get, "/audit/verify", userKey: nil, apiKey: adminKey).object
            #expect(verify["valid"] as? Bool == true && verify["records"] as? Int == 6)
        }
        let database = try DatabaseQueue(path: first.configuration.databasePath)
        try await database.write { try $0.execute(sql: "UPDATE audit_log SET actor = 'uk:forged00000' WHERE id = 2") }
        try database.close()
        try await TestNode(directory: first.directory, { $0.apiKey = adminKey }).run { (client: any TestClientProtocol) async throws in
            let verify = try await client.send(.get, "/audit/verify", userKey: nil, apiKey: adminKey).object
            #expect(verify["valid"] as? Bool == false && verify["first_broken"] as? Int == 2 && verify["records"] as? Int == 7)
            let metrics = try await client.send(.get, "/metrics", userKey: nil)
            #expect(metrics.body.contains("osc_audit_verification_failures_total 1"))
        }
    }

    @Test func auditCanBeTurnedOff() async throws {
        try await TestNode({
            $0.apiKey = adminKey; $0.auditEnabled = false
        }).run { (client: any TestClientProtocol) async throws in
            _ = try await client.send(.post, "/configs", body: #"{"key":"k","value":1}"#)
            _ = try await client.send(.get, "/configs/k")
            #expect(try await client.audit("").isEmpty)
            let verify = try await client.send(.get, "/audit/verify", userKey: nil, apiKey: adminKey).object
            #expect(verify["valid"] as? Bool == true && verify["records"] as? Int == 0)
        }
    }
}

@Suite struct AuditFormatTests {
    @Test func csvCellsAreQuotedAndDefused() {
        #expect(AuditCSV.cell("plain") == "plain")
        #expect(AuditCSV.cell("a,b") == #""a,b""#)
        #expect(AuditCSV.cell(#"say "hi""#) == #""say ""hi""""#)
        #expect(AuditCSV.cell("line\r\nbreak") == "\"line\r\nbreak\"")
        #expect(AuditCSV.cell("=cmd()") == "'=cmd()" && AuditCSV.cell("@x,y") == #""'@x,y""#)
    }

    @Test func configurationParsesHistoryAndAuditSettings() throws {
        let defaults = try NodeConfiguration.parse([:])
        #expect(defaults.maxVersions == nil && defaults.auditEnabled)
        let set = try NodeConfiguration.parse(["OSC_MAX_VERSIONS": "10", "OSC_AUDIT_ENABLED": "false"])
        #expect(set.maxVersions == 10 && !set.auditEnabled)
        #expect(try NodeConfiguration.parse(["OSC_MAX_VERSIONS": "0"]).maxVersions == nil)
        #expect(throws: ConfigurationError.self) { try NodeConfiguration.parse(["OSC_MAX_VERSIONS": "-1"]) }
        #expect(throws: ConfigurationError.self) { try NodeConfiguration.parse(["OSC_AUDIT_ENABLED": "sometimes"]) }
        #expect(
            NodeConfiguration.variables.contains { $0.name == "OSC_MAX_VERSIONS" }
                && NodeConfiguration.variables.contains { $0.name == "OSC_AUDIT_ENABLED" }
        )
    }
}
