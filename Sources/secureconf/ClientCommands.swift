import ArgumentParser
import Foundation
import SecureConfClient

/// Where a client command sends its request. Credentials come from `OSC_API_KEY` and
/// `SECURECONF_USER_KEY`, or from a file only the user can read (`--credentials-file`,
/// `SECURECONF_CREDENTIALS_FILE`), never from flags: argv shows in process lists.
struct ClientOptions: ParsableArguments {
    @Option(help: "The node's base URL.") var url: String = "http://127.0.0.1:9000"
    @Option(help: "The environment (the node's default is 'default').") var environment: String?
    @Option(help: "A file of OSC_API_KEY=… and SECURECONF_USER_KEY=… lines, mode 0600 (default: $SECURECONF_CREDENTIALS_FILE).")
    var credentialsFile: String?
    @Option(help: "PEM certificate authorities to verify an https node against, instead of the system's (default: $SECURECONF_CA_FILE).")
    var caFile: String?

    func client() throws(ClientError) -> SecureConfClient {
        SecureConfClient(
            baseURL: url,
            credentials: try Credentials.resolve(file: credentialsFile),
            environment: environment,
            caFile: caFile ?? ProcessInfo.processInfo.environment[SecureConfClient.caFileVariable]
        )
    }

    /// Sends one request and returns the body of its 2xx answer.
    func send(_ request: ClientRequest) async throws(ClientError) -> Data { try await client().send(request) }
}

/// Writes `data` to standard output, ending with a newline.
func printReply(_ data: Data) {
    FileHandle.standardOutput.write(data)
    if data.last != UInt8(ascii: "\n") { FileHandle.standardOutput.write(Data("\n".utf8)) }
}

/// Runs a client command's body, turning a failure into one line on standard error and exit status 1.
func runClient(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let failure as ClientError {
        FileHandle.standardError.write(Data("secureconf: \(failure.description)\n".utf8))
        throw ExitCode(1)
    }
}

struct Versions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a key's versions, oldest first (no values).")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The configuration key.") var key: String

    func run() async throws {
        try await runClient {
            printReply(try await options.send(.versions(key: key)))
        }
    }
}

struct Diff: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the RFC 6902 JSON Patch from one version of a key to another.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The configuration key.") var key: String
    @Option(help: "The version to start from.") var from: Int
    @Option(help: "The version to end at.") var to: Int

    func run() async throws {
        try await runClient {
            printReply(try await options.send(.diff(key: key, from: from, to: to)))
        }
    }
}

struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a new version of a key holding an old version's value (undeletes a deleted key)."
    )
    @OptionGroup var options: ClientOptions
    @Argument(help: "The configuration key.") var key: String
    @Option(name: .customLong("version"), help: "The version whose value to bring back.") var version: Int

    func run() async throws {
        try await runClient {
            printReply(try await options.send(.rollback(key: key, version: version)))
        }
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restore a whole environment to how it was at a moment, by writing new versions.")
    @OptionGroup var options: ClientOptions
    @Option(help: "The moment, RFC 3339 (2025-01-31T12:00:00Z).") var at: String

    func run() async throws {
        try await runClient {
            printReply(try await options.send(.restore(at: at)))
        }
    }
}

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Search, export and verify the audit trail (needs the API key).",
        subcommands: [Search.self, Export.self, Verify.self]
    )

    struct Search: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print one page of matching records, oldest first, as JSON.")
        @OptionGroup var options: ClientOptions
        @Option(help: "Only this configuration key.") var key: String?
        @Option(help: "Only this action (create, read, update, delete, rollback, restore, …).") var action: String?
        @Option(help: "Only this actor (uk:…, ak:…, anonymous).") var actor: String?
        @Option(help: "Only this outcome: success, denied or failure.") var outcome: String?
        @Option(help: "From this time (RFC 3339), inclusive.") var since: String?
        @Option(help: "Up to this time (RFC 3339), inclusive.") var until: String?
        @Option(help: "Records per page, 1-1000 (the node's default is 100).") var limit: Int?
        @Option(help: "The next_cursor of the previous page.") var cursor: String?

        func run() async throws {
            try await runClient {
                printReply(
                    try await options.send(
                        .auditSearch(
                            .init(
                                key: key,
                                action: action,
                                actor: actor,
                                outcome: outcome,
                                since: since,
                                until: until,
                                limit: limit,
                                cursor: cursor
                            )
                        )
                    )
                )
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write every matching record to standard output as JSON Lines or CSV.")
        @OptionGroup var options: ClientOptions
        @Option(help: "jsonl or csv.") var format: String = "jsonl"
        @Option(help: "From this time (RFC 3339), inclusive.") var since: String?
        @Option(help: "Up to this time (RFC 3339), inclusive.") var until: String?

        func run() async throws {
            try await runClient {
                FileHandle.standardOutput.write(try await options.send(.auditExport(format: format, since: since, until: until)))
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-compute the hash chain; exits 1 if it is broken.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let client = try options.client()
                let data = try await client.send(.auditVerify)
                printReply(data)
                guard let result = try? JSONDecoder().decode(AuditVerification.self, from: data) else {
                    throw ClientError(.unreachable, "unexpected reply to /audit/verify")
                }
                if !result.valid {
                    throw ClientError(.refused(status: 200), "the audit chain is broken at record \(result.first_broken.map(String.init) ?? "?")")
                }
            }
        }
    }
}
