import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SecureConfJSON
import SecureConfStore
import Testing

@testable import SecureConfServer

/// The current time as RFC 3339 with microseconds, after a pause so that writes before and
/// after it fall in different milliseconds of the hybrid logical clock.
func momentBetweenWrites() async throws -> String {
    try await Task.sleep(for: .milliseconds(15))
    let now = Timestamp.iso8601(micros: Int64((Date().timeIntervalSince1970 * 1_000_000).rounded(.down)))
    try await Task.sleep(for: .milliseconds(15))
    return now
}

/// Whether two JSON values (as JSONSerialization returns them) are equal, member order aside.
func jsonEqual(_ a: Any?, _ b: Any?) -> Bool {
    func canonical(_ v: Any?) -> Data? {
        guard let v else { return nil }
        return try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .fragmentsAllowed])
    }
    guard let x = canonical(a), let y = canonical(b) else { return false }
    return x == y
}

func parseJSON(_ text: String) -> Any? {
    try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
}

@Suite struct HistoryAPITests {
    @Test func versionsListHistoryWithoutValuesAndVersionReadsReturnThem() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            #expect(
                try await client.send(.post, "/configs", body: #"{"key":"db","value":{"host":"h1-secret"},"category":"c","environment":"prod"}"#)
                    .status == .created
            )
            #expect(try await client.send(.put, "/configs/db?environment=prod", body: #"{"value":{"host":"h2-secret"}}"#).status == .ok)
            #expect(try await client.send(.put, "/configs/db?environment=prod", body: #"{"value":[1,2]}"#).status == .ok)

            let versions = try await client.send(.get, "/configs/db/versions?environment=prod", userKey: nil)
            #expect(versions.status == .ok)
            #expect(versions.object["key"] as? String == "db" && versions.object["environment"] as? String == "prod")
            let list = try #require(versions.object["versions"] as? [[String: Any]])
            #expect(list.map { $0["version"] as? Int } == [1, 2, 3])
            #expect(list.allSatisfy { Set($0.keys) == ["version", "created_at", "deleted", "origin_node", "actor"] })
            #expect(list.allSatisfy { $0["deleted"] as? Bool == false && $0["origin_node"] as? String == "127.0.0.1:9000" })
            #expect(list.allSatisfy { $0["actor"] is NSNull }, "without a user key that opens the entry, no actor ids (no offline oracle)")
            #expect(!versions.body.contains("secret"), "no values in the version list")
            let withKey = try await client.send(.get, "/configs/db/versions?environment=prod")
            let actors = try #require(withKey.object["versions"] as? [[String: Any]]).compactMap { $0["actor"] as? String }
            #expect(Set(actors).count == 1 && actors.count == 3 && actors[0].hasPrefix("uk:"), "the owner's key sees who wrote each version")
            let stranger = try await client.send(.get, "/configs/db/versions?environment=prod", userKey: "someone-elses-key")
            #expect(stranger.status == .unauthorized, "a key that does not open the entry gets 401, not the actors")

            for (n, expected) in [(1, #"{"host":"h1-secret"}"#), (2, #"{"host":"h2-secret"}"#), (3, "[1,2]")] {
                let read = try await client.send(.get, "/configs/db/versions/\(n)?environment=prod")
                #expect(read.status == .ok)
                #expect(read.object["version"] as? Int == n && read.object["key"] as? String == "db" && read.object["category"] as? String == "c")
                #expect(jsonEqual(read.object["value"], parseJSON(expected)), "version \(n): \(read.body)")
                #expect(read.object["created_at"] is String && read.object["updated_at"] is String && read.object["id"] is Int)
            }
            let wrong = try await client.send(.get, "/configs/db/versions/1?environment=prod", userKey: "a-wrong-user-key")
            #expect(wrong.status == .unauthorized && !wrong.body.contains("secret"))
            #expect(try await client.send(.get, "/configs/db/versions/1?environment=prod", userKey: nil).status == .unauthorized)
            #expect(try await client.send(.get, "/configs/db/versions/4?environment=prod").status == .notFound)
            #expect(try await client.send(.get, "/configs/db/versions/1").status == .notFound, "other environment")
            #expect(try await client.send(.get, "/configs/db/versions/zero?environment=prod").status == .unprocessableContent)
            #expect(try await client.send(.get, "/configs/none/versions").status == .notFound)
        }
    }

    @Test func diffIsAJSONPatchOverNestedValues() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            let v1 = #"{"host":"a","port":5432,"nested":{"list":[1,2,3],"keep":true},"a/b":1,"m~n":"x","n":1.0}"#
            let v2 = #"{"port":5432,"host":"b","nested":{"list":[1,{"z":5}],"keep":true,"new":null},"a/b":2,"extra":[1],"n":1}"#
            _ = try await client.send(.post, "/configs", body: #"{"key":"cfg","value":\#(v1)}"#)
            _ = try await client.send(.put, "/configs/cfg", body: #"{"value":\#(v2)}"#)
            _ = try await client.send(.put, "/configs/cfg", body: #"{"value":"now a string"}"#)

            let diff = try await client.send(.get, "/configs/cfg/diff?from=1&to=2")
            #expect(diff.status == .ok, "\(diff.body)")
            #expect(diff.object["from"] as? Int == 1 && diff.object["to"] as? Int == 2)
            let expected = #"""
                [{"op":"replace","path":"/host","value":"b"},
                 {"op":"replace","path":"/nested/list/1","value":{"z":5}},
                 {"op":"remove","path":"/nested/list/2"},
                 {"op":"add","path":"/nested/new","value":null},
                 {"op":"replace","path":"/a~1b","value":2},
                 {"op":"remove","path":"/m~0n"},
                 {"op":"add","path":"/extra","value":[1]}]
                """#
            #expect(jsonEqual(diff.object["operations"], parseJSON(expected)), "\(diff.body)")

            let reverse = try await client.send(.get, "/configs/cfg/diff?from=2&to=1")
            let operations = try #require(reverse.object["operations"] as? [[String: Any]])
            #expect(operations.contains { $0["op"] as? String == "add" && $0["path"] as? String == "/nested/list/2" && $0["value"] as? Int == 3 })
            #expect(operations.contains { $0["op"] as? String == "add" && $0["path"] as? String == "/m~0n" })

            let whole = try await client.send(.get, "/configs/cfg/diff?from=2&to=3")
            #expect(jsonEqual(whole.object["operations"], parseJSON(#"[{"op":"replace","path":"","value":"now a string"}]"#)), "\(whole.body)")
            #expect(jsonEqual(try await client.send(.get, "/configs/cfg/diff?from=3&to=3").object["operations"], []))

            #expect(try await client.send(.get, "/configs/cfg/diff?from=1&to=2", userKey: "a-wrong-user-key").status == .unauthorized)
            #expect(try await client.send(.get, "/configs/cfg/diff?from=1&to=9").status == .notFound)
            #expect(try await client.send(.get, "/configs/cfg/diff?from=1").status == .unprocessableContent)
        }
    }

    @Test func rollbackWritesANewRevisionWithTheOldValue() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            _ = try await client.send(.post, "/configs", body: #"{"key":"k","value":{"v":1},"category":"one"}"#)
            _ = try await client.send(.put, "/configs/k", body: #"{"value":{"v":2},"category":"two"}"#)
            let rolled = try await client.send(.post, "/configs/k/rollback?version=1")
            #expect(rolled.status == .ok, "\(rolled.body)")
            #expect(jsonEqual(rolled.object["value"], ["v": 1]) && rolled.object["version"] as? Int == 3)
            #expect(rolled.object["category"] as? String == "one" && rolled.object["key"] as? String == "k")
            #expect(jsonEqual(try await client.send(.get, "/configs/k").object["value"], ["v": 1]))
            let versions = try await client.send(.get, "/configs/k/versions").object["versions"] as? [Any]
            #expect(versions?.count == 3, "history only grows")

            #expect(try await client.send(.post, "/configs/k/rollback?version=2", userKey: "a-wrong-user-key").status == .unauthorized)
            #expect(try await client.send(.post, "/configs/k/rollback?version=7").status == .notFound)
            #expect(try await client.send(.post, "/configs/k/rollback").status == .unprocessableContent)
            #expect(try await client.send(.post, "/configs/nope/rollback?version=1").status == .notFound)
            #expect(jsonEqual(try await client.send(.get, "/configs/k").object["value"], ["v": 1]), "failed rollbacks change nothing")
            #expect((try await client.send(.get, "/configs/k/versions").object["versions"] as? [Any])?.count == 3)
        }
    }

    @Test func deletedKeysKeepTheirHistoryAndRollbackUndeletes() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            _ = try await client.send(.post, "/configs", body: #"{"key":"gone","value":"first"}"#)
            _ = try await client.send(.put, "/configs/gone", body: #"{"value":"second"}"#)
            #expect(try await client.send(.delete, "/configs/gone").status == .ok)
            #expect(try await client.send(.get, "/configs/gone").status == .notFound)

            let versions = try #require(try await client.send(.get, "/configs/gone/versions").object["versions"] as? [[String: Any]])
            #expect(versions.map { $0["deleted"] as? Bool } == [false, false, true])
            #expect(try await client.send(.get, "/configs/gone/versions/1").object["value"] as? String == "first")
            let tombstone = try await client.send(.get, "/configs/gone/versions/3")
            #expect(tombstone.status == .notFound && tombstone.detail?.contains("version 3 is a delete") == true, "\(tombstone.body)")

            let back = try await client.send(.post, "/configs/gone/rollback?version=2")
            #expect(back.status == .ok && back.object["value"] as? String == "second" && back.object["version"] as? Int == 4)
            #expect(try await client.send(.get, "/configs/gone").object["value"] as? String == "second")
            #expect(try await client.send(.get, "/configs").array.map { $0["key"] as? String } == ["gone"])
            #expect(try await client.send(.get, "/ready", userKey: nil).object["entries"] as? Int == 1)
        }
    }

    @Test func readsAtAPointInTime() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            let before = try await momentBetweenWrites()
            _ = try await client.send(.post, "/configs", body: #"{"key":"t","value":"v1"}"#)
            let afterCreate = try await momentBetweenWrites()
            _ = try await client.send(.put, "/configs/t", body: #"{"value":"v2"}"#)
            let afterUpdate = try await momentBetweenWrites()
            _ = try await client.send(.delete, "/configs/t")
            let afterDelete = try await momentBetweenWrites()

            func at(_ time: String) async throws -> Reply {
                try await client.send(.get, "/configs/t?at=\(time.replacingOccurrences(of: "+", with: "%2B"))")
            }
            #expect(try await at(before).status == .notFound)
            #expect(try await at(afterCreate).object["value"] as? String == "v1")
            #expect(try await at(afterUpdate).object["value"] as? String == "v2")
            #expect(try await at(afterDelete).status == .notFound)
            // The same moment written with an offset.
            let micros = try #require(RFC3339.parseMicros(afterCreate))
            let shifted = Timestamp.iso8601(micros: micros + 2 * 3_600_000_000).replacingOccurrences(of: "Z", with: "+02:00")
            #expect(try await at(shifted).object["value"] as? String == "v1")
            #expect(
                try await client.send(.get, "/configs/t?at=\(shifted)").object["value"] as? String == "v1",
                "an unescaped + (a space) is accepted"
            )
            #expect(try await client.send(.get, "/configs/t?at=yesterday").status == .unprocessableContent)
            #expect(try await client.send(.get, "/configs/t?at=\(afterUpdate)", userKey: "a-wrong-user-key").status == .unauthorized)
        }
    }

    @Test func restoreAnEnvironmentAndLeaveOthersAlone() async throws {
        try await TestNode().run { (client: any TestClientProtocol) async throws in
            for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
                _ = try await client.send(.post, "/configs", body: #"{"key":"\#(key)","value":\#(value),"environment":"prod"}"#)
            }
            _ = try await client.send(.post, "/configs", userKey: "someone-elses-key", body: #"{"key":"theirs","value":"t1","environment":"prod"}"#)
            _ = try await client.send(.post, "/configs", body: #"{"key":"x","value":1,"environment":"dev"}"#)
            let moment = try await momentBetweenWrites()
            _ = try await client.send(.put, "/configs/a?environment=prod", body: #"{"value":10}"#)
            _ = try await client.send(.delete, "/configs/b?environment=prod")
            _ = try await client.send(.post, "/configs", body: #"{"key":"d","value":4,"environment":"prod"}"#)
            _ = try await client.send(.put, "/configs/theirs?environment=prod", userKey: "someone-elses-key", body: #"{"value":"t2"}"#)
            _ = try await client.send(.put, "/configs/x?environment=dev", body: #"{"value":2}"#)

            let restore = try await client.send(.post, "/restore?environment=prod&at=\(moment)")
            #expect(restore.status == .ok, "\(restore.body)")
            let r = restore.object
            #expect(r["environment"] as? String == "prod" && r["at"] as? String == moment)
            #expect(r["restored"] as? [String] == ["a"] && r["recreated"] as? [String] == ["b"] && r["deleted"] as? [String] == ["d"])
            #expect(r["unchanged"] as? Int == 1 && r["undecryptable"] as? Int == 1, "counted, never named")
            #expect(!restore.body.contains("theirs"))

            func value(_ key: String, _ env: String, userKey: String = "correct-user-key") async throws -> Reply {
                try await client.send(.get, "/configs/\(key)?environment=\(env)", userKey: userKey)
            }
            #expect(try await value("a", "prod").object["value"] as? Int == 1)
            #expect(try await value("b", "prod").object["value"] as? Int == 2)
            #expect(try await value("c", "prod").object["value"] as? Int == 3)
            #expect(try await value("d", "prod").status == .notFound)
            #expect(try await value("theirs", "prod", userKey: "someone-elses-key").object["value"] as? String == "t2", "not changed")
            #expect(try await value("x", "dev").object["value"] as? Int == 2, "another environment is left alone")
            #expect(
                (try await client.send(.get, "/configs/a/versions?environment=prod").object["versions"] as? [Any])?.count == 3,
                "restore adds revisions"
            )

            let again = try await client.send(.post, "/restore?environment=prod&at=\(moment)").object
            #expect(again["restored"] as? [String] == [] && again["unchanged"] as? Int == 4, "restoring twice changes nothing more")
            #expect(try await client.send(.post, "/restore?environment=prod").status == .unprocessableContent)
            #expect(try await client.send(.post, "/restore?environment=prod&at=\(moment)", userKey: nil).status == .unauthorized)
        }
    }

    @Test func retentionKeepsTheNewestVersions() async throws {
        try await TestNode({ $0.maxVersions = 3 }).run { (client: any TestClientProtocol) async throws in
            _ = try await client.send(.post, "/configs", body: #"{"key":"r","value":1}"#)
            for i in 2...6 { _ = try await client.send(.put, "/configs/r", body: #"{"value":\#(i)}"#) }
            let history = try await client.send(.get, "/configs/r/versions").object
            #expect((history["versions"] as? [[String: Any]])?.map { $0["version"] as? Int } == [4, 5, 6])
            #expect(history["pruned"] as? Int == 3 && history["current_version"] as? Int == 6)
            let pruned = try await client.send(.get, "/configs/r/versions/2")
            #expect(pruned.status == .notFound && pruned.detail?.contains("pruned") == true)
            #expect(try await client.send(.get, "/configs/r/versions/6").object["value"] as? Int == 6)
            #expect(try await client.send(.get, "/configs/r").object["value"] as? Int == 6)
        }
    }

    @Test func historySurvivesARestart() async throws {
        let first = try TestNode()
        try await first.run { (client: any TestClientProtocol) async throws in
            _ = try await client.send(.post, "/configs", body: #"{"key":"p","value":"one"}"#)
            _ = try await client.send(.put, "/configs/p", body: #"{"value":"two"}"#)
        }
        try await TestNode(directory: first.directory).run { (client: any TestClientProtocol) async throws in
            #expect((try await client.send(.get, "/configs/p/versions").object["versions"] as? [Any])?.count == 2)
            #expect(try await client.send(.get, "/configs/p/versions/1").object["value"] as? String == "one")
            #expect(try await client.send(.post, "/configs/p/rollback?version=1").object["version"] as? Int == 3)
        }
    }
}

@Suite struct RFC3339Tests {
    @Test func parsesZonesAndFractions() {
        #expect(RFC3339.parseMicros("1970-01-01T00:00:00Z") == 0)
        #expect(RFC3339.parseMicros("1970-01-01T01:00:00.5+01:00") == 500_000)
        #expect(RFC3339.parseMicros("1970-01-01t00:00:00.123456789z") == 123_456)
        #expect(RFC3339.parseMicros("2000-02-29T12:00:00-00:30") == 951_827_400_000_000, "12:00 at -00:30 is 12:30 UTC")
        #expect(RFC3339.parseMicros("2024-05-01T12:00:00 02:00") == RFC3339.parseMicros("2024-05-01T10:00:00Z"))
        for bad in [
            "", "2024-05-01", "2024-05-01T12:00:00", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00.Z", "2024-05-01T12:00:00Zjunk", "yesterday",
        ] {
            #expect(RFC3339.parseMicros(bad) == nil, "\(bad)")
        }
        #expect(Timestamp.iso8601(micros: RFC3339.parseMicros("2025-01-31T12:34:56.789Z") ?? 0) == "2025-01-31T12:34:56.789000Z")
    }
}
