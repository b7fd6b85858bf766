import Foundation
import GRDB
import HummingbirdTesting
import Logging
import Testing

@testable import SecureConfServer

@Suite struct NodeStartupTests {
    func write(_ node: TestNode) async throws {
        try await node.run { (client: any TestClientProtocol) async throws in
            #expect(try await client.send(.post, "/configs", body: #"{"key":"k","value":"v"}"#).status == .created)
        }
    }

    @Test func saltIsCreatedPrivateAndReused() async throws {
        let first = try TestNode()
        let salt = try #require(FileManager.default.contents(atPath: first.configuration.saltFilePath))
        #expect(salt.count == 64)
        let mode = try FileManager.default.attributesOfItem(atPath: first.configuration.saltFilePath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        try await write(first)
        let second = try TestNode(directory: first.directory)
        #expect(second.node.saltFingerprint == first.node.saltFingerprint)
        try await second.run { (client: any TestClientProtocol) async throws in
            #expect(try await client.send(.get, "/configs/k").object["value"] as? String == "v")
        }
    }

    @Test func dataWithoutARecordedFingerprintStillNeedsItsSalt() async throws {
        let original = try TestNode()
        try await write(original)
        let path = original.configuration.saltFilePath
        // A database that holds data but lost its recorded salt fingerprint (an older version,
        // a hand edit): the data alone must stop a new salt from being minted.
        let queue = try DatabaseQueue(path: original.configuration.databasePath)
        try await queue.write { db in try db.execute(sql: "DELETE FROM meta WHERE name = 'salt_fingerprint'") }
        try FileManager.default.removeItem(atPath: path)
        #expect(throws: StartupError.self) { _ = try TestNode(directory: original.directory) }
        #expect(!FileManager.default.fileExists(atPath: path), "no new salt is minted over existing data")
    }

    @Test func missingTruncatedOrForeignSaltRefusesToStart() async throws {
        let original = try TestNode()
        try await write(original)
        let path = original.configuration.saltFilePath
        let salt = try #require(FileManager.default.contents(atPath: path))

        try FileManager.default.removeItem(atPath: path)
        #expect(throws: StartupError.self) { _ = try TestNode(directory: original.directory) }
        #expect(!FileManager.default.fileExists(atPath: path), "no new salt is minted over existing data")

        try salt.prefix(32).write(to: URL(fileURLWithPath: path))
        #expect(throws: StartupError.self) { _ = try TestNode(directory: original.directory) }

        try Data((0..<64).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: path))
        do {
            _ = try TestNode(directory: original.directory)
            Issue.record("a foreign salt must be refused")
        } catch let error as StartupError {
            #expect(error.description.contains(path) && error.description.contains("backup"))
        }

        try salt.write(to: URL(fileURLWithPath: path))
        _ = try TestNode(directory: original.directory)
    }
}

@Suite struct ConfigurationTests {
    @Test func defaultsAreOpenSecureConfs() throws {
        let c = try NodeConfiguration.parse([:])
        #expect(c.host == "127.0.0.1" && c.port == 9000 && c.minUserKeyLength == 8 && !c.apiKeyRequired)
        #expect(c.keyCacheSize == 1024 && c.keyCacheTTLSeconds == 300 && c.maxBodyBytes == 1_048_576)
        #expect(c.databasePath == "data/configurations.db" && c.saltFilePath == "data/encryption.salt")
    }

    @Test func invalidValuesNameTheVariable() {
        let cases: [([String: String], String)] = [
            (["OSC_HOST_PORT": "abc"], "OSC_HOST_PORT"),
            (["OSC_HOST_PORT": "70000"], "OSC_HOST_PORT"),
            (["OSC_LOG_FORMAT": "xml"], "OSC_LOG_FORMAT"),
            (["OSC_LOG_LEVEL": "loud"], "OSC_LOG_LEVEL"),
            (["OSC_API_KEY_REQUIRED": "maybe"], "OSC_API_KEY_REQUIRED"),
            (["OSC_API_KEY_REQUIRED": "true"], "OSC_API_KEY"),
            (["OSC_CLUSTER_MODE": "mesh"], "OSC_CLUSTER_MODE"),
            (["OSC_CLUSTER_NODES": "a:1,nonsense"], "OSC_CLUSTER_NODES"),
            (["OSC_CLUSTER_SYNC_INTERVAL": "-1"], "OSC_CLUSTER_SYNC_INTERVAL"),
            (["OSC_KEY_CACHE_SIZE": "lots"], "OSC_KEY_CACHE_SIZE"),
        ]
        for (values, variable) in cases {
            #expect(throws: ConfigurationError.self) { try NodeConfiguration.parse(values) }
            do { _ = try NodeConfiguration.parse(values) } catch { #expect(error.variable == variable) }
        }
    }

    @Test func dotEnvIsReadAndOverridden() throws {
        let directory = temporaryDirectory()
        let path = directory + "/.env"
        try """
        # a comment
        OSC_HOST_PORT=9123
        export OSC_LOG_FORMAT="console"
        OSC_MIN_USER_KEY_LENGTH=12 # trailing comment
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let c = try NodeConfiguration.load(environment: ["OSC_MIN_USER_KEY_LENGTH": "10"], dotEnvPath: path, overrides: ["OSC_LOG_FORMAT": "json"])
        #expect(c.port == 9123)
        #expect(c.minUserKeyLength == 10, "the environment beats .env")
        #expect(c.logFormat == .json, "flags beat both")
    }
}
