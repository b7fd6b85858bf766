import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import SecureConfServer

@Suite struct ConfigAPITests {
    @Test func crudRoundTripWithEveryJSONType() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            let values = [
                #"{"host":"db","port":5432,"nested":{"a":[1,2,{"b":null}]}}"#, #"[1,"two",3.5,true]"#, #""plain""#, "42",
                "-1.5e300", "true", "false", "null", "12345678901234567890123", #""ünïcødé ✓ \u0000""#,
            ]
            for (i, value) in values.enumerated() {
                let created = try await client.send(.post, "/configs", body: #"{"key":"k\#(i)","value":\#(value),"category":"cat"}"#)
                #expect(created.status == .created, "\(value): \(created.body)")
                #expect(created.object["environment"] as? String == "default")
                let read = try await client.send(.get, "/configs/k\(i)")
                #expect(read.status == .ok)
                let sent = try JSONSerialization.jsonObject(with: Data(value.utf8), options: [.fragmentsAllowed]) as? NSObject
                #expect(
                    (read.object["value"] as? NSObject) == sent || (value == "null" && read.object["value"] is NSNull),
                    "\(value) round-trips, got \(read.body)"
                )
            }
            let list = try await client.send(.get, "/configs?category=cat")
            #expect(list.array.count == values.count)
            let updated = try await client.send(.put, "/configs/k0", body: #"{"value":{"host":"db2"}}"#)
            #expect(updated.status == .ok)
            #expect(updated.object["category"] as? String == "cat", "category kept when not given")
            #expect((updated.object["value"] as? [String: Any])?["host"] as? String == "db2")
            let deleted = try await client.send(.delete, "/configs/k0")
            #expect(deleted.status == .ok)
            #expect(deleted.object["message"] as? String == "Configuration 'k0' deleted successfully")
            #expect(try await client.send(.get, "/configs/k0").status == .notFound)
            #expect(try await client.send(.delete, "/configs/k0").status == .notFound)
        }
    }

    @Test func environmentsAreSeparate() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            #expect(try await client.send(.post, "/configs", body: #"{"key":"db","value":1,"environment":"prod"}"#).status == .created)
            #expect(try await client.send(.post, "/configs", body: #"{"key":"db","value":2,"environment":"dev"}"#).status == .created)
            let duplicate = try await client.send(.post, "/configs", body: #"{"key":"db","value":3,"environment":"dev"}"#)
            #expect(duplicate.status == .badRequest)
            #expect(duplicate.detail?.contains("already exists") == true)
            #expect(try await client.send(.get, "/configs/db?environment=prod").object["value"] as? Int == 1)
            #expect(try await client.send(.get, "/configs/db?environment=dev").object["value"] as? Int == 2)
            #expect(try await client.send(.get, "/configs/db").status == .notFound, "no entry in the default environment")
            #expect(try await client.send(.get, "/configs?environment=dev").array.count == 1)
            #expect(try await client.send(.get, "/configs").array.count == 2)
            #expect(try await client.send(.delete, "/configs/db?environment=dev").status == .ok)
            #expect(try await client.send(.get, "/configs/db?environment=prod").status == .ok)
        }
    }

    @Test func userKeysAreChecked() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            #expect(try await client.send(.post, "/configs", body: #"{"key":"secret","value":"v1"}"#).status == .created)
            for (key, reason) in [(nil, "missing"), ("short", "short"), ("a-wrong-user-key", "wrong")] as [(String?, String)] {
                let read = try await client.send(.get, "/configs/secret", userKey: key)
                #expect(read.status == .unauthorized, "\(reason) user key on read")
                #expect(read.detail != nil && !read.body.contains("v1"))
                #expect(try await client.send(.put, "/configs/secret", userKey: key, body: #"{"value":"hijack"}"#).status == .unauthorized)
                #expect(try await client.send(.delete, "/configs/secret", userKey: key).status == .unauthorized)
                #expect(try await client.send(.get, "/configs", userKey: key).status == .unauthorized)
            }
            #expect(try await client.send(.get, "/configs/secret").object["value"] as? String == "v1", "nothing changed")
            // Another user's entries are left out of a list, not shown.
            #expect(try await client.send(.post, "/configs", userKey: "second-user-key", body: #"{"key":"other","value":"v2"}"#).status == .created)
            let mine = try await client.send(.get, "/configs")
            #expect(mine.array.map { $0["key"] as? String } == ["secret"])
            #expect(mine.headers[HTTPField.Name("X-SecureConf-Skipped")!] == "1")
        }
    }

    @Test func apiKeyModeAnswers403() async throws {
        let node = try TestNode { c in
            c.apiKeyRequired = true
            c.apiKey = "the-cluster-api-key"
        }
        try await node.run { (client: any TestClientProtocol) async throws in
            #expect(try await client.send(.get, "/configs").status == .forbidden)
            #expect(try await client.send(.get, "/configs", apiKey: "wrong").status == .forbidden)
            #expect(try await client.send(.get, "/cluster/status").status == .forbidden)
            #expect(try await client.send(.get, "/configs", apiKey: "the-cluster-api-key").status == .ok)
            #expect(try await client.send(.get, "/cluster/status", apiKey: "the-cluster-api-key").status == .ok)
            for open in ["/", "/health", "/ready", "/cluster/health", "/metrics"] {
                #expect(try await client.send(.get, open, userKey: nil).status == .ok, "\(open) needs no API key")
            }
        }
    }

    @Test func badInputGets4xxWithDetail() async throws {
        let node = try TestNode { c in c.maxBodyBytes = 4096 }
        try await node.run { (client: any TestClientProtocol) async throws in
            let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
            let cases: [(String, HTTPRequest.Method, String, [UInt8], HTTPResponse.Status)] = [
                ("malformed", .post, "/configs", Array(#"{"key": "a", "value": "#.utf8), .badRequest),
                ("invalid UTF-8", .post, "/configs", [0x7B, 0x22, 0x6B, 0x65, 0x79, 0x22, 0x3A, 0x22, 0xFF, 0xFE, 0x22, 0x7D], .badRequest),
                ("deep", .post, "/configs", Array(#"{"key":"d","value":\#(deep)}"#.utf8), .badRequest),
                ("not an object", .post, "/configs", Array("[1,2]".utf8), .unprocessableContent),
                ("missing value", .post, "/configs", Array(#"{"key":"a"}"#.utf8), .unprocessableContent),
                ("key not a string", .post, "/configs", Array(#"{"key":5,"value":1}"#.utf8), .unprocessableContent),
                ("key with slash", .post, "/configs", Array(#"{"key":"a/b","value":1}"#.utf8), .unprocessableContent),
                ("key control char", .post, "/configs", Array(#"{"key":"a\u0001","value":1}"#.utf8), .unprocessableContent),
                (
                    "key too long", .post, "/configs", Array(#"{"key":"\#(String(repeating: "k", count: 256))","value":1}"#.utf8),
                    .unprocessableContent
                ),
                (
                    "category too long", .post, "/configs", Array(#"{"key":"c","value":1,"category":"\#(String(repeating: "c", count: 101))"}"#.utf8),
                    .unprocessableContent
                ),
                ("environment wrong type", .post, "/configs", Array(#"{"key":"c","value":1,"environment":[]}"#.utf8), .unprocessableContent),
                ("empty body", .post, "/configs", [], .badRequest),
                ("NUL in JSON", .post, "/configs", Array("{\"key\":\"a\u{0}\",\"value\":1}".utf8), .badRequest),
                ("too large", .post, "/configs", Array(#"{"key":"big","value":"\#(String(repeating: "x", count: 5000))"}"#.utf8), .contentTooLarge),
                ("bad percent", .get, "/configs/abc%zz", [], .badRequest),
                ("bad query", .get, "/configs?environment=%ff", [], .badRequest),
                ("bad limit", .get, "/configs?limit=-3", [], .unprocessableContent),
                ("unknown route", .get, "/nope", [], .notFound),
                ("encoded slash", .get, "/configs/a%2Fb", [], .unprocessableContent),
            ]
            for (name, method, uri, body, status) in cases {
                let reply = try await client.send(method, uri, rawBody: body)
                #expect(reply.status == status, "\(name): got \(reply.status) \(reply.body)")
                #expect(reply.detail != nil, "\(name): body \(reply.body) has a detail")
            }
            #expect(try await client.send(.get, "/configs").array.isEmpty, "no bad request changed anything")
        }
    }

    @Test func percentEncodedKeysWork() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            #expect(try await client.send(.post, "/configs", body: #"{"key":"my key ключ","value":1}"#).status == .created)
            let read = try await client.send(.get, "/configs/my%20key%20%D0%BA%D0%BB%D1%8E%D1%87")
            #expect(read.status == .ok)
            #expect(read.object["key"] as? String == "my key ключ")
        }
    }

    @Test func listPaginates() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            for i in 0..<7 { _ = try await client.send(.post, "/configs", body: #"{"key":"p\#(i)","value":\#(i)}"#) }
            let page1 = try await client.send(.get, "/configs?limit=3")
            #expect(page1.array.count == 3)
            let after = try #require(page1.headers[HTTPField.Name("X-SecureConf-Next-After")!])
            let page2 = try await client.send(.get, "/configs?limit=3&after=\(after)")
            #expect(page2.array.map { $0["key"] as? String } == ["p3", "p4", "p5"])
            #expect(try await client.send(.get, "/configs?limit=3&offset=6").array.count == 1)
        }
    }

    @Test func metricsUseRouteTemplatesAndNoSecrets() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            _ = try await client.send(.post, "/configs", body: #"{"key":"metric-key-name","value":"plaintext-value-xyz"}"#)
            _ = try await client.send(.get, "/configs/metric-key-name")
            _ = try await client.send(.get, "/configs/missing-key-name")
            let metrics = try await client.send(.get, "/metrics", userKey: nil)
            #expect(metrics.status == .ok)
            for name in [
                "osc_http_requests_total", "osc_http_request_duration_seconds", "osc_config_operations_total", "osc_config_entries_total",
                "osc_cluster_nodes_total", "osc_cluster_nodes_healthy", "osc_encryption_operations_total", "osc_api_errors_total",
                "osc_key_derivations_total", "osc_key_cache_hits_total", "osc_key_cache_misses_total", "osc_key_derivation_duration_seconds",
            ] {
                #expect(metrics.body.contains(name), "\(name) is exported")
            }
            #expect(metrics.body.contains(#"endpoint="/configs/{key}""#))
            #expect(metrics.body.contains("osc_config_entries_total 1"))
            for secret in ["metric-key-name", "missing-key-name", "plaintext-value-xyz", "correct-user-key"] {
                #expect(!metrics.body.contains(secret), "\(secret) must not appear in metrics")
            }
        }
    }

    @Test func serviceInfoAndClusterEndpoints() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            let info = try await client.send(.get, "/", userKey: nil).object
            #expect(info["service"] as? String == "SecureConf")
            #expect(info["api_key_required"] as? Bool == false)
            #expect(info["cluster_enabled"] as? Bool == false)
            #expect(info["endpoints"] is [String: Any] && info["features"] is [Any] && info["version"] is String)
            let health = try await client.send(.get, "/cluster/health", userKey: nil).object
            #expect(health["status"] as? String == "healthy" && health["node_id"] as? String == "127.0.0.1:9000")
            let status = try await client.send(.get, "/cluster/status", userKey: nil).object
            #expect(status["enabled"] as? Bool == false)
            #expect((status["salt_fingerprint"] as? String)?.count == 16)
            #expect(try await client.send(.get, "/ready", userKey: nil).object["ready"] as? Bool == true)
        }
    }
}

@Suite struct AbuseTests {
    @Test func repeatedWrongKeysAreRateLimitedButKnownKeysStillWork() async throws {
        let node = try TestNode { c in
            c.authFailureLimit = 4
            c.authFailureWindowSeconds = 60
        }
        try await node.run { (client: any TestClientProtocol) async throws in
            // The create derives a new key that it checks against nothing: one failure of the four.
            #expect(try await client.send(.post, "/configs", body: #"{"key":"k","value":1}"#).status == .created)
            for i in 0..<3 {
                #expect(try await client.send(.get, "/configs/k", userKey: "wrong-key-\(i)").status == .unauthorized)
            }
            let limited = try await client.send(.get, "/configs/k", userKey: "wrong-key-next")
            #expect(limited.status == .tooManyRequests)
            #expect(limited.headers[.retryAfter] != nil && limited.detail != nil)
            #expect(try await client.send(.get, "/configs/k").status == .ok, "a cached key is not locked out")
        }
    }
}
