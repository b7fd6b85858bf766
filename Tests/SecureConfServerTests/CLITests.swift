import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ServiceLifecycle
import Testing

@testable import SecureConfServer

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The `secureconf` executable next to the test bundle (`swift build` puts both in one directory).
let secureconfExecutable: String? = {
    let candidates = [
        Bundle.main.bundleURL.appendingPathComponent("secureconf").path,
        Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("secureconf").path,
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/debug/secureconf").path,
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}()

struct CLIResult {
    let status: Int32
    let stdout: String
    let stderr: String
}

func runCLI(_ arguments: [String], environment: [String: String]) throws -> CLIResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: secureconfExecutable ?? "/nonexistent")
    process.arguments = arguments
    process.environment = environment
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CLIResult(
        status: process.terminationStatus,
        stdout: String(decoding: stdout, as: UTF8.self),
        stderr: String(decoding: stderr, as: UTF8.self)
    )
}

/// Sends one request to a live node (setup for the CLI test).
func liveRequest(_ method: String, _ url: String, body: String) async throws -> Int {
    var request = URLRequest(url: try #require(URL(string: url)))
    request.httpMethod = method
    request.setValue("correct-user-key", forHTTPHeaderField: "X-User-Key")
    request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    request.httpBody = Data(body.utf8)
    let (_, response) = try await URLSession.shared.data(for: request)
    return (response as? HTTPURLResponse)?.statusCode ?? 0
}

@Suite(.serialized) struct CLITests {
    /// A real node (`buildApplication`, as `secureconf serve` runs it) on 127.0.0.1:19320,
    /// driven by the real `secureconf` client subcommands.
    @Test(.enabled(if: secureconfExecutable != nil, "the secureconf executable is built"))
    func clientSubcommandsTalkToANode() async throws {
        let node = try TestNode { c in
            c.apiKey = adminKey
            c.port = 19320
        }
        let (ready, readiness) = AsyncStream.makeStream(of: Int.self)
        let app = try buildApplication(node: node.node) { port in readiness.yield(port) }
        let services = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: Logger(label: "cli-test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await services.run() }
            for await _ in ready { break }
            defer { Task { await services.triggerGracefulShutdown() } }
            try await exerciseTheCLI()
            await services.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    func exerciseTheCLI() async throws {
        #expect(
            try await liveRequest(
                "POST",
                "http://127.0.0.1:19320/configs",
                body: #"{"key":"db","value":{"host":"a","password":"cli-plaintext-1"},"environment":"prod"}"#
            ) == 201
        )
        #expect(
            try await liveRequest(
                "PUT",
                "http://127.0.0.1:19320/configs/db?environment=prod",
                body: #"{"value":{"host":"b","password":"cli-plaintext-1"}}"#
            ) == 200
        )
        let url = "--url=http://127.0.0.1:19320"
        let env = ["SECURECONF_USER_KEY": "correct-user-key", "OSC_API_KEY": adminKey]

        let versions = try runCLI(["versions", "db", "--environment", "prod", url], environment: env)
        #expect(versions.status == 0, "stderr: \(versions.stderr)")
        #expect(versions.stdout.contains(#""version":2"#), "stdout: \(versions.stdout)")
        let diff = try runCLI(["diff", "db", "--from", "1", "--to", "2", "--environment", "prod", url], environment: env)
        #expect(diff.status == 0 && diff.stdout.contains(#"{"op":"replace","path":"/host","value":"b"}"#), "\(diff.stderr)")
        let rollback = try runCLI(["rollback", "db", "--version", "1", "--environment", "prod", url], environment: env)
        #expect(rollback.status == 0 && rollback.stdout.contains(#""version":3"#), "\(rollback.stderr)")
        let missing = try runCLI(["rollback", "db", "--version", "9", "--environment", "prod", url], environment: env)
        #expect(missing.status == 1 && missing.stderr.contains("404") && missing.stderr.contains("Version 9"), "\(missing.stderr)")
        let restore = try runCLI(["restore", "--at", "2000-01-01T00:00:00Z", "--environment", "prod", url], environment: env)
        #expect(restore.status == 0 && restore.stdout.contains(#""deleted":["db"]"#), "\(restore.stdout) \(restore.stderr)")
        let search = try runCLI(["audit", "search", "--key", "db", url], environment: env)
        #expect(search.status == 0 && search.stdout.contains(#""action":"rollback""#), "\(search.stderr)")
        #expect(search.stdout.contains(#""client":"127.0.0.1:"#), "a live request records the peer address")
        let csv = try runCLI(["audit", "export", "--format", "csv", url], environment: env)
        #expect(csv.status == 0 && csv.stdout.hasPrefix("id,time,node_id,actor"), "\(csv.stderr)")
        let verify = try runCLI(["audit", "verify", url], environment: env)
        #expect(verify.status == 0 && verify.stdout.contains(#""valid":true"#), "\(verify.stderr)")
        // Credentials from a file only the user can read; its values win over the environment's.
        let file = temporaryDirectory() + "/credentials"
        try "# SecureConf client\nOSC_API_KEY=not-the-admin-key\nSECURECONF_USER_KEY=correct-user-key\n".write(
            toFile: file,
            atomically: true,
            encoding: .utf8
        )
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file)
        let refused = try runCLI(["audit", "verify", url, "--credentials-file", file], environment: env)
        #expect(refused.status == 1 && refused.stderr.contains("403"), "\(refused.stderr)")
        let fromFile = try runCLI(
            ["diff", "db", "--from", "1", "--to", "2", "--environment", "prod", url],
            environment: ["SECURECONF_CREDENTIALS_FILE": file]
        )
        #expect(fromFile.status == 0 && fromFile.stdout.contains(#""op":"replace""#), "\(fromFile.stderr)")
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file)
        let readable = try runCLI(["versions", "db", url, "--credentials-file", file], environment: [:])
        #expect(readable.status == 1 && readable.stderr.contains("chmod 600"), "a file others can read is refused: \(readable.stderr)")
        // Keys are never taken from argv (process lists show it).
        let onArgv = try runCLI(["versions", "db", url, "--user-key", "correct-user-key"], environment: [:])
        #expect(onArgv.status != 0 && onArgv.stderr.contains("--user-key"), "\(onArgv.stderr)")
        let noKey = try runCLI(["diff", "db", "--from", "1", "--to", "2", url], environment: [:])
        #expect(noKey.status != 0 && noKey.stderr.contains("SECURECONF_USER_KEY"), "\(noKey.stderr)")
        for result in [versions, diff, rollback, missing, restore, search, csv, verify, refused, fromFile, readable, noKey] {
            for secret in ["correct-user-key", adminKey, "not-the-admin-key", "cli-plaintext-1"]
            where !(secret == "cli-plaintext-1" && result.stdout.contains("\"value\"")) {
                #expect(!result.stdout.contains(secret) && !result.stderr.contains(secret), "the CLI never echoes a key")
            }
        }
    }
}
