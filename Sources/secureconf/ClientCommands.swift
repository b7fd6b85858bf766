import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Where a client command sends its request and with which credentials. Keys come from the
/// flags or from `OSC_API_KEY` / `SECURECONF_USER_KEY`, and are never printed.
struct ClientOptions: ParsableArguments {
    @Option(help: "The node's base URL.") var url: String = "http://127.0.0.1:9000"
    @Option(help: "The environment (the node's default is 'default').") var environment: String?
    @Option(help: "X-API-Key (default: $OSC_API_KEY).") var apiKey: String?
    @Option(help: "X-User-Key (default: $SECURECONF_USER_KEY; prefer the variable: flags show in process lists).") var userKey: String?

    var resolvedAPIKey: String? { apiKey ?? ProcessInfo.processInfo.environment["OSC_API_KEY"].flatMap { $0.isEmpty ? nil : $0 } }
    var resolvedUserKey: String? { userKey ?? ProcessInfo.processInfo.environment["SECURECONF_USER_KEY"].flatMap { $0.isEmpty ? nil : $0 } }
}

/// A failed client request: the one line printed before exiting non-zero.
struct ClientFailure: Error, CustomStringConvertible {
    let description: String
}

/// Sends one request to a node and returns the body of a 2xx answer; anything else
/// becomes a `ClientFailure` carrying the node's `detail`.
struct NodeClient {
    let options: ClientOptions

    /// `segments` are path segments (percent-encoded here); nil query values are left out.
    func send(_ method: String, _ segments: [String], query: [(String, String?)] = [], needsUserKey: Bool = false) async throws -> Data {
        guard var components = URLComponents(string: options.url) else { throw ClientFailure(description: "--url \(options.url) is not a URL") }
        var pathAllowed = CharacterSet.urlPathAllowed
        pathAllowed.remove(charactersIn: "/;?#%")
        let base = components.percentEncodedPath.hasSuffix("/") ? String(components.percentEncodedPath.dropLast()) : components.percentEncodedPath
        components.percentEncodedPath = base + segments.map { "/" + ($0.addingPercentEncoding(withAllowedCharacters: pathAllowed) ?? $0) }.joined()
        var queryAllowed = CharacterSet.urlQueryAllowed
        queryAllowed.remove(charactersIn: "&=+#%")
        let items = query.compactMap { name, value in
            value.map { name + "=" + ($0.addingPercentEncoding(withAllowedCharacters: queryAllowed) ?? $0) }
        }
        components.percentEncodedQuery = items.isEmpty ? nil : items.joined(separator: "&")
        guard let url = components.url else { throw ClientFailure(description: "cannot build a URL from --url \(options.url)") }

        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = 120
        if let apiKey = options.resolvedAPIKey { request.setValue(apiKey, forHTTPHeaderField: "X-API-Key") }
        if let userKey = options.resolvedUserKey {
            request.setValue(userKey, forHTTPHeaderField: "X-User-Key")
        } else if needsUserKey {
            throw ClientFailure(description: "a user key is needed: set SECURECONF_USER_KEY or pass --user-key")
        }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw ClientFailure(description: "cannot reach \(options.url): \(error.localizedDescription)")
        }
        guard let http = response as? HTTPURLResponse else { throw ClientFailure(description: "no HTTP response from \(options.url)") }
        guard (200..<300).contains(http.statusCode) else {
            let detail = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["detail"] as? String
            throw ClientFailure(description: "\(http.statusCode): \(detail ?? String(decoding: data.prefix(500), as: UTF8.self))")
        }
        return data
    }

    /// Writes `data` to standard output, ending with a newline.
    static func print(_ data: Data) {
        FileHandle.standardOutput.write(data)
        if data.last != UInt8(ascii: "\n") { FileHandle.standardOutput.write(Data("\n".utf8)) }
    }
}

/// Runs a client command's body, turning a failure into the node's detail on standard
/// error and exit status 1.
func runClient(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let failure as ClientFailure {
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
            NodeClient.print(try await NodeClient(options: options).send("GET", ["configs", key, "versions"], query: [("environment", options.environment)]))
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
            NodeClient.print(try await NodeClient(options: options).send(
                "GET", ["configs", key, "diff"], query: [("environment", options.environment), ("from", String(from)), ("to", String(to))],
                needsUserKey: true))
        }
    }
}

struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a new version of a key holding an old version's value (undeletes a deleted key).")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The configuration key.") var key: String
    @Option(name: .customLong("version"), help: "The version whose value to bring back.") var version: Int

    func run() async throws {
        try await runClient {
            NodeClient.print(try await NodeClient(options: options).send(
                "POST", ["configs", key, "rollback"], query: [("environment", options.environment), ("version", String(version))], needsUserKey: true))
        }
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restore a whole environment to how it was at a moment, by writing new versions.")
    @OptionGroup var options: ClientOptions
    @Option(help: "The moment, RFC 3339 (2025-01-31T12:00:00Z).") var at: String

    func run() async throws {
        try await runClient {
            NodeClient.print(try await NodeClient(options: options).send(
                "POST", ["restore"], query: [("environment", options.environment), ("at", at)], needsUserKey: true))
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
                NodeClient.print(try await NodeClient(options: options).send("GET", ["audit"], query: [
                    ("key", key), ("environment", options.environment), ("action", action), ("actor", actor), ("outcome", outcome),
                    ("since", since), ("until", until), ("limit", limit.map(String.init)), ("cursor", cursor),
                ]))
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
                let data = try await NodeClient(options: options).send("GET", ["audit", "export"], query: [
                    ("format", format), ("since", since), ("until", until), ("environment", options.environment),
                ])
                FileHandle.standardOutput.write(data)
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-compute the hash chain; exits 1 if it is broken.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await runClient {
                let data = try await NodeClient(options: options).send("GET", ["audit", "verify"])
                NodeClient.print(data)
                let result = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
                if result?["valid"] as? Bool != true {
                    throw ClientFailure(description: "the audit chain is broken at record \(result?["first_broken"].map { "\($0)" } ?? "?")")
                }
            }
        }
    }
}
