import ArgumentParser
import Foundation
import Mustache
import SecureConfClient
import SecureConfCrypto
import SecureConfJSON
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// `agent.yaml`: where to read, what to render, what to do after a change.
struct AgentConfiguration: Decodable {
    /// One node, or a list tried in turn.
    var url: [String]
    var environment: String
    var category: String?
    var credentials_file: String?
    /// PEM certificate authorities to verify https nodes against (default: $SECURECONF_CA_FILE, else the system's).
    var ca_file: String?
    /// The offline cache, encrypted under the user key (default: none).
    var cache: String?
    var templates: [Target]

    struct Target: Decodable {
        /// The Mustache template file.
        var template: String
        /// The rendered file (written atomically, mode 0600).
        var destination: String
        /// Run with /bin/sh -c after the file changed.
        var command: String?
        /// Sent to the process in `pid_file` after the file changed (HUP, USR1, TERM, …).
        var signal: String?
        var pid_file: String?
    }

    enum CodingKeys: String, CodingKey { case url, environment, category, credentials_file, ca_file, cache, templates }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let one = try? c.decode(String.self, forKey: .url) { url = [one] } else { url = try c.decode([String].self, forKey: .url) }
        environment = try c.decode(String.self, forKey: .environment)
        category = try c.decodeIfPresent(String.self, forKey: .category)
        credentials_file = try c.decodeIfPresent(String.self, forKey: .credentials_file)
        ca_file = try c.decodeIfPresent(String.self, forKey: .ca_file)
        cache = try c.decodeIfPresent(String.self, forKey: .cache)
        templates = try c.decode([Target].self, forKey: .templates)
    }
}

struct Agent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render templates from an environment's values into files, and re-render them when a value changes.",
        discussion: """
            Templates are Mustache ({{key}}, {{key.member}}, {{#entries}}{{key}}={{value}}{{/entries}}; no HTML \
            escaping). Each file is written atomically with mode 0600; after a file changed, its command runs or its \
            signal is sent. With a cache, the last values are kept encrypted under the user key and rendered while no \
            node answers. Exit status with --once: 0 rendered from a node, 75 rendered from the cache, 1 nothing rendered.
            """
    )
    @Option(help: "The agent's YAML configuration.") var config: String
    @Flag(help: "Render once and exit (0 from a node, 75 from the offline cache).") var once = false

    func run() async throws {
        let configuration: AgentConfiguration
        do {
            configuration = try YAMLDecoder().decode(AgentConfiguration.self, from: try String(contentsOfFile: config, encoding: .utf8))
        } catch {
            FileHandle.standardError.write(Data("secureconf agent: cannot read \(config): \(error)\n".utf8))
            throw ExitCode(2)
        }
        try await runClient {
            let credentials = try Credentials.resolve(file: configuration.credentials_file)
            guard credentials.userKey != nil else {
                throw ClientError(.credentials, "the agent needs the user key: SECURECONF_USER_KEY, OSC_USER_KEY or credentials_file")
            }
            let agent = try RenderingAgent(configuration: configuration, credentials: credentials)
            let status = await once ? agent.renderOnce() : agent.runForever()
            if status != 0 { throw ExitCode(status) }
        }
    }
}

/// The agent's work: read (a node, else the cache), render, act; follow the events.
final class RenderingAgent: @unchecked Sendable {
    let configuration: AgentConfiguration
    let client: SecureConfClient
    let templates: [(target: AgentConfiguration.Target, template: MustacheTemplate)]
    let cache: OfflineCache?
    private var rendered: [String: String] = [:]
    /// What the cache holds (saved again only when it changes: each save runs PBKDF2).
    private var saved: [Entry]?

    init(configuration: AgentConfiguration, credentials: Credentials) throws(ClientError) {
        self.configuration = configuration
        client = SecureConfClient(
            baseURLs: configuration.url,
            credentials: credentials,
            environment: configuration.environment,
            caFile: configuration.ca_file ?? ProcessInfo.processInfo.environment[SecureConfClient.caFileVariable]
        )
        cache = configuration.cache.map {
            OfflineCache(path: $0, userKey: credentials.userKey!, scope: "\(configuration.environment)\u{0}\(configuration.category ?? "")")
        }
        var templates: [(AgentConfiguration.Target, MustacheTemplate)] = []
        for target in configuration.templates {
            guard let text = try? String(contentsOfFile: target.template, encoding: .utf8) else {
                throw ClientError(.unusable, "cannot read the template \(target.template)")
            }
            do {
                templates.append((target, try MustacheTemplate(string: "{{% CONTENT_TYPE: TEXT}}" + text)))
            } catch {
                throw ClientError(.unusable, "the template \(target.template) does not parse: \(error)")
            }
        }
        self.templates = templates
    }

    func log(_ text: String) { FileHandle.standardError.write(Data("secureconf agent: \(text)\n".utf8)) }

    enum Source { case node, cache }

    /// The values from the first node that answers, saved to the cache; else from the cache.
    func load() async -> (entries: [Entry], source: Source)? {
        do {
            let entries = try await client.entries(category: configuration.category)
            if let cache, entries != saved {
                do {
                    try cache.save(entries)
                    saved = entries
                } catch {
                    log("cannot write the offline cache: \(error)")
                }
            }
            return (entries, .node)
        } catch {
            guard let cache, let entries = cache.load() else {
                log("no node answered (\(error)) and there is no usable offline cache")
                return nil
            }
            log("no node answered (\(error)); rendering the last known values from the offline cache")
            return (entries, .cache)
        }
    }

    /// Renders every template; runs the actions of the files that changed.
    func render(_ entries: [Entry]) {
        let context = Self.context(entries)
        for (target, template) in templates {
            let text = template.render(context)
            guard rendered[target.destination] != text else { continue }
            do {
                try AtomicFile.write(Data(text.utf8), to: target.destination)
            } catch {
                log("cannot write \(target.destination): \(error)")
                continue
            }
            rendered[target.destination] = text
            log("rendered \(target.destination)")
            act(target)
        }
    }

    private func act(_ target: AgentConfiguration.Target) {
        if let command = target.command {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", command]
            var environment = ProcessInfo.processInfo.environment
            for name in WorkloadVariables.credentialVariables { environment.removeValue(forKey: name) }
            process.environment = environment
            do {
                try process.run()
                process.waitUntilExit()
                if process.terminationStatus != 0 { log("the command of \(target.destination) exited \(process.terminationStatus)") }
            } catch {
                log("cannot run the command of \(target.destination): \(error)")
            }
        }
        if let name = target.signal, let pidFile = target.pid_file {
            guard let number = Self.signals[name.uppercased().replacingOccurrences(of: "SIG", with: "")] else {
                log("unknown signal \(name)")
                return
            }
            guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                pid > 1
            else {
                log("no pid in \(pidFile)")
                return
            }
            if kill(pid, number) != 0 { log("cannot signal \(pid): \(String(cString: strerror(errno)))") }
        }
    }

    static let signals: [String: Int32] = ["HUP": SIGHUP, "INT": SIGINT, "TERM": SIGTERM, "USR1": SIGUSR1, "USR2": SIGUSR2, "QUIT": SIGQUIT]

    /// The template context: each key's value (objects by member, `{{db.host}}`), and
    /// `entries`, a list of `key` / `value` (value as a variable would hold it).
    static func context(_ entries: [Entry]) -> [String: Any] {
        var context: [String: Any] = [:]
        for entry in entries { context[entry.key] = any(entry.value) }
        context["entries"] = entries.map { entry -> [String: Any] in
            let text: String = if case .string(let s) = entry.value { s } else { String(decoding: JSONWriter.encode(entry.value), as: UTF8.self) }
            return ["key": entry.key, "value": text, "category": entry.category ?? ""]
        }
        return context
    }

    /// A JSON value as Mustache renders it: strings, number literals, booleans, lists, maps.
    static func any(_ value: JSONValue) -> Any {
        switch value {
        case .null: return ""
        case .bool(let b): return b
        case .number(let n): return n
        case .string(let s): return s
        case .array(let items):
            var list: [Any] = []
            for item in items { list.append(any(item)) }
            return list
        case .object(let members):
            var map: [String: Any] = [:]
            for (name, member) in members { map[name] = any(member) }
            return map
        }
    }

    func renderOnce() async -> Int32 {
        guard let (entries, source) = await load() else { return 1 }
        render(entries)
        return source == .node ? 0 : 75
    }

    /// Renders, then follows the change events (any node, in turn), re-rendering within a
    /// second of a change; while no node answers, serves from the cache and keeps trying.
    // Not optimized: with -O, Swift 6.3's loop-invariant code motion ran for tens of minutes on
    // this loop. It waits on the network; nothing here is hot.
    @_optimize(none)
    func runForever() async -> Int32 {
        var lastID: String?
        var rendered = false
        while true {
            let stream = try? await client.events(
                EventFilter(environment: configuration.environment, category: configuration.category),
                lastEventID: lastID
            )
            // (Re-)read after (re-)subscribing: nothing between the two is missed.
            if let (entries, source) = await load() {
                render(entries)
                rendered = true
                if source == .cache { log("serving from the offline cache until a node answers") }
            } else if !rendered {
                log("nothing to render yet")
            }
            if let stream {
                do {
                    for try await event in stream {
                        if let id = event.id { lastID = id }
                        if event.isChange || event.name == "reset" || event.name == "resync" {
                            if let (entries, _) = await load() { render(entries) }
                        }
                    }
                } catch {
                    log("the event stream ended: \(error)")
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}

/// The agent's last values, encrypted under the user key: PBKDF2-HMAC-SHA256 (a random
/// 16-byte salt, 200,000 iterations) gives a Fernet key; the file is written atomically, 0600.
struct OfflineCache {
    let path: String
    let userKey: String
    /// The environment and category the values came from: a cache of another is no cache.
    let scope: String
    static let iterations: UInt32 = 200_000

    func save(_ entries: [Entry]) throws {
        let salt = OpenSSL.randomBytes(16)
        var records: [JSONValue] = []
        for e in entries {
            var members: [(String, JSONValue)] = []
            members.append(("key", .string(e.key)))
            members.append(("environment", .string(e.environment)))
            members.append(("category", e.category == nil ? .null : .string(e.category!)))
            members.append(("value", e.value))
            records.append(.object(members))
        }
        // The scope is inside the token, so it is authenticated with the values.
        let token = Fernet.encrypt(JSONWriter.encode(.object([("scope", .string(scope)), ("entries", .array(records))])), key: key(salt))
        var file: [(String, JSONValue)] = []
        file.append(("version", .number("2")))
        file.append(("salt", .string(Data(salt).base64EncodedString())))
        file.append(("iterations", .number(String(Self.iterations))))
        file.append(("token", .string(token)))
        try AtomicFile.write(Data(JSONWriter.encode(.object(file))), to: path)
    }

    func load() -> [Entry]? {
        guard let data = FileManager.default.contents(atPath: path), let file = try? JSONParser.parse(Array(data), maxDepth: 8),
            let saltText = file["salt"]?.stringValue, let salt = Data(base64Encoded: saltText), let token = file["token"]?.stringValue,
            let plaintext = try? Fernet.decrypt(token, key: key(Array(salt))), let document = try? JSONParser.parse(plaintext, maxDepth: 512),
            document["scope"]?.stringValue == scope, case .array(let records)? = document["entries"]
        else { return nil }
        return records.compactMap { r in
            guard let key = r["key"]?.stringValue, let environment = r["environment"]?.stringValue, let value = r["value"] else { return nil }
            return Entry(key: key, environment: environment, category: r["category"]?.stringValue, value: value)
        }
    }

    private func key(_ salt: [UInt8]) -> DerivedKey {
        var bytes = PBKDF2.sha256(password: Array(userKey.utf8), salt: salt, iterations: Self.iterations, length: 32)
        return DerivedKey(consuming: &bytes)
    }
}
