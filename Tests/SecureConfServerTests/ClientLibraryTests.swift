import Foundation
import Logging
import SecureConfClient
import SecureConfJSON
import ServiceLifecycle
import Testing

@testable import SecureConfServer

/// `SecureConfClient` against a real node (`buildApplication`, as `secureconf serve` runs it)
/// on 127.0.0.1:19330: entries, typed refusals, a dead first node skipped, and the change
/// events as an `AsyncSequence`.
@Suite(.serialized) struct ClientLibraryTests {
    @Test func theClientReadsEntriesFollowsEventsAndSkipsADeadNode() async throws {
        let node = try TestNode { c in c.port = 19330 }
        let (ready, readiness) = AsyncStream.makeStream(of: Int.self)
        let app = try buildApplication(node: node.node) { port in readiness.yield(port) }
        let services = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: Logger(label: "client-test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await services.run() }
            for await _ in ready { break }
            defer { Task { await services.triggerGracefulShutdown() } }
            try await exercise()
            await services.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    func exercise() async throws {
        let credentials = Credentials(userKey: "correct-user-key")
        // Port 9 answers nothing: the client moves on to the next node.
        let client = SecureConfClient(baseURLs: ["http://127.0.0.1:9", "http://127.0.0.1:19330"], credentials: credentials, environment: "prod")
        #expect(try await client.entries().isEmpty)

        let events = try await client.events(EventFilter(environment: "prod"))
        var iterator = events.makeAsyncIterator()
        let connected = try #require(try await iterator.next())
        #expect(connected.name == "connected" && connected.id == "127.0.0.1:19330.0")

        #expect(
            try await liveRequest(
                "POST",
                "http://127.0.0.1:19330/configs",
                body: #"{"key":"db","value":{"host":"a"},"environment":"prod","category":"d"}"#
            ) == 201
        )
        #expect(try await liveRequest("POST", "http://127.0.0.1:19330/configs", body: #"{"key":"other","value":1,"environment":"staging"}"#) == 201)
        let created = try #require(try await iterator.next())
        #expect(created.name == "created" && created.key == "db" && created.isChange)
        #expect(created.data["data"] == .object([("value", .object([("host", .string("a"))]))]), "the value, for the key that wrote it")

        let entries = try await client.entries()
        #expect(entries == [Entry(key: "db", environment: "prod", category: "d", value: .object([("host", .string("a"))]))])
        #expect(try WorkloadVariables.flatten(entries).map { "\($0.name)=\($0.value)" } == ["DB_HOST=a"])

        let wrong = SecureConfClient(baseURL: "http://127.0.0.1:19330", credentials: Credentials(userKey: "a-wrong-user-key"), environment: "prod")
        await #expect {
            _ = try await wrong.entries()
        } throws: { error in
            (error as? ClientError)?.kind == .refused(status: 401)
        }
        try await typedWrites(client)

        let nobody = SecureConfClient(baseURL: "http://127.0.0.1:9", credentials: credentials)
        await #expect {
            _ = try await nobody.entries()
        } throws: { error in
            (error as? ClientError)?.kind == .unreachable
        }
    }

    /// create, update, entry, delete, backup and import, as a user of the library sees them.
    func typedWrites(_ client: SecureConfClient) async throws {
        let created = try await client.create("api", value: .object([("token", .string("t1"))]), category: "svc")
        #expect(created == Entry(key: "api", environment: "prod", category: "svc", value: .object([("token", .string("t1"))])))
        await #expect {
            try await client.create("api", value: .number("2"))
        } throws: { error in
            (error as? ClientError)?.kind == .refused(status: 400)
        }
        let updated = try await client.update("api", value: .string("t2"))
        #expect(updated.value == .string("t2") && updated.category == "svc", "category kept when none is given")
        #expect(try await client.entry("api").value == .string("t2"))

        let backup = try await client.backup(password: "backup-password-1")
        #expect(backup.totalKeys == 2 && !backup.data.isEmpty)
        try await client.delete("api")
        await #expect {
            _ = try await client.entry("api")
        } throws: { error in
            (error as? ClientError)?.kind == .refused(status: 404)
        }
        await #expect {
            _ = try await client.importBackup(backup.data, password: "not-the-password")
        } throws: { error in
            if case .refused(let status) = (error as? ClientError)?.kind { return (400..<500).contains(status) }
            return false
        }
        let report = try await client.importBackup(backup.data, password: "backup-password-1")
        #expect(report == ImportReport(imported: 1, skipped: 1, failedKeys: []), "api comes back, db exists and is kept")
        #expect(try await client.entry("api").value == .string("t2"))
    }
}
