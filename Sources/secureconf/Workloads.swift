import ArgumentParser
import Foundation
import SecureConfClient
import SecureConfJSON

#if canImport(Glibc)
import Glibc
#endif

/// Where workload commands read from: one or more nodes, an environment, a category.
struct WorkloadOptions: ParsableArguments {
    @Option(help: "The node's base URL; repeat it, or separate with commas, to try a cluster's nodes in turn.")
    var url: [String] = ["http://127.0.0.1:9000"]
    @Option(help: "The environment to read.") var environment: String
    @Option(help: "Only entries of this category.") var category: String?
    @Option(help: "Prepended to every variable name (APP_ makes db.host APP_DB_HOST).") var prefix: String = ""
    @Option(help: "A file of OSC_API_KEY=… and SECURECONF_USER_KEY=… lines, mode 0600 (default: $SECURECONF_CREDENTIALS_FILE).")
    var credentialsFile: String?
    @Option(help: "PEM certificate authorities to verify https nodes against, instead of the system's (default: $SECURECONF_CA_FILE).")
    var caFile: String?

    /// The client, with the user key from the environment, the credentials file, or a prompt
    /// on the terminal: never from an argument.
    func client() throws(ClientError) -> SecureConfClient {
        var credentials = try Credentials.resolve(file: credentialsFile)
        if credentials.userKey == nil, isatty(STDIN_FILENO) != 0, let typed = getpass("SecureConf user key: ") {
            let key = String(cString: typed)
            credentials.userKey = key.isEmpty ? nil : key
        }
        return SecureConfClient(
            baseURLs: url,
            credentials: credentials,
            environment: environment,
            caFile: caFile ?? ProcessInfo.processInfo.environment[SecureConfClient.caFileVariable]
        )
    }
}

struct ExportValues: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Print an environment's values as dotenv, shell, JSON or YAML, or write them to a file (atomically, mode 0600).",
        discussion: """
            dotenv and shell give one variable per value (README: names and flattening); json and yaml give \
            each key with its value as stored.
            """
    )
    @OptionGroup var options: WorkloadOptions
    @Option(help: "dotenv, shell, json or yaml.") var format: String = "dotenv"
    @Option(help: "Write here instead of standard output: a new file, renamed into place, mode 0600.") var output: String?

    func validate() throws {
        guard ["dotenv", "shell", "json", "yaml"].contains(format) else { throw ValidationError("--format is dotenv, shell, json or yaml") }
    }

    func run() async throws {
        try await runClient {
            let entries = try await options.client().entries(category: options.category)
            let text = try Self.render(entries, format: format, prefix: options.prefix)
            if let output {
                try AtomicFile.write(Data(text.utf8), to: output)
            } else {
                FileHandle.standardOutput.write(Data(text.utf8))
            }
        }
    }

    static func render(_ entries: [Entry], format: String, prefix: String) throws(ClientError) -> String {
        switch format {
        case "json":
            let object = JSONValue.object(entries.map { ($0.key, $0.value) })
            return String(decoding: JSONWriter.encode(object), as: UTF8.self) + "\n"
        case "yaml":
            // JSON's double-quoted strings, numbers, true, false and null are YAML too.
            return entries.map { entry in
                String(decoding: JSONWriter.encode(.string(entry.key)), as: UTF8.self) + ": "
                    + String(decoding: JSONWriter.encode(entry.value), as: UTF8.self)
            }.joined(separator: "\n") + (entries.isEmpty ? "{}\n" : "\n")
        case "shell":
            return try WorkloadVariables.flatten(entries, prefix: prefix).map { "export \($0.name)=\(shellQuoted($0.value))\n" }.joined()
        default:
            return try WorkloadVariables.flatten(entries, prefix: prefix).map { "\($0.name)=\(dotenvQuoted($0.value))\n" }.joined()
        }
    }

    /// POSIX shell single quotes: nothing inside is special; a quote is closed, escaped, reopened.
    static func shellQuoted(_ value: String) -> String { "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// dotenv: single quotes (literal) when the value allows; otherwise double quotes with
    /// `\\`, `\"`, `\n`, `\r` and `\t` escaped.
    static func dotenvQuoted(_ value: String) -> String {
        if !value.contains("'") && !value.contains("\n") && !value.contains("\r") { return "'" + value + "'" }
        var out = "\""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.append(c)
            }
        }
        return out + "\""
    }
}

/// Writes files as secrets are written: a new file in the same directory, mode 0600, synced,
/// then renamed over the destination, so a reader sees the old file or the new one, whole.
enum AtomicFile {
    static func write(_ data: Data, to path: String) throws(ClientError) {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary =
            (directory.isEmpty ? "." : directory) + "/." + (path as NSString).lastPathComponent
            + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ClientError(.unusable, "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var ok = data.withUnsafeBytes { buffer -> Bool in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                offset += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        var reason = ok ? "" : String(cString: strerror(errno))
        close(fd)
        if ok && rename(temporary, path) != 0 {
            ok = false
            reason = String(cString: strerror(errno))
        }
        guard ok else {
            unlink(temporary)
            throw ClientError(.unusable, "cannot write \(path): \(reason)")
        }
        // The rename itself survives a crash once the directory is synced.
        let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command with an environment's values as environment variables.",
        discussion: """
            The values become variables (README: names and flattening); every SecureConf credential \
            (OSC_API_KEY, SECURECONF_USER_KEY, OSC_USER_KEY, SECURECONF_CREDENTIALS_FILE) is removed from the \
            command's environment. Without --watch the command replaces this process (signals and the exit \
            status are its own). With --watch, signals are passed on, and the command is restarted \
            (SIGTERM, --grace seconds, then SIGKILL) when a value it was given changes.
            """
    )
    @OptionGroup var options: WorkloadOptions
    @Flag(help: "Follow the change events and restart the command when one of its values changes.") var watch = false
    @Option(help: "Seconds between SIGTERM and SIGKILL on a restart.") var grace: Double = 10
    @Argument(parsing: .captureForPassthrough, help: "-- COMMAND ARGS...") var command: [String] = []

    func validate() throws {
        guard !arguments.isEmpty else { throw ValidationError("give the command after --: secureconf run --environment prod -- ./app") }
    }

    var arguments: [String] { command.first == "--" ? Array(command.dropFirst()) : command }

    func run() async throws {
        try await runClient {
            let client = try options.client()
            if watch {
                let code = try await Watcher(client: client, options: options, arguments: arguments, grace: grace).run()
                throw ExitCode(code)
            }
            let environment = try await Self.childEnvironment(client: client, options: options)
            Self.exec(arguments, environment: environment)
        }
    }

    /// This process's environment without credentials, with the values added (they win).
    static func childEnvironment(client: SecureConfClient, options: WorkloadOptions) async throws(ClientError) -> [String: String] {
        let variables = try WorkloadVariables.flatten(try await client.entries(category: options.category), prefix: options.prefix)
        return merged(variables)
    }

    static func merged(_ variables: [(name: String, value: String)]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        for name in WorkloadVariables.credentialVariables { environment.removeValue(forKey: name) }
        for (name, value) in variables { environment[name] = value }
        return environment
    }

    static func cStrings(_ strings: [String]) -> [UnsafeMutablePointer<CChar>?] { strings.map { strdup($0) } + [nil] }

    /// Where `execvp` would look for `command`: itself when it names a path, else each PATH entry.
    static func searchPath(_ command: String, path: String) -> [String] {
        if command.contains("/") { return [command] }
        return path.split(separator: ":", omittingEmptySubsequences: false).map { ($0.isEmpty ? "." : String($0)) + "/" + command }
            .filter { access($0, X_OK) == 0 }
    }

    /// Replaces this process with the command (PATH searched); returns only to report failure.
    static func exec(_ arguments: [String], environment: [String: String]) -> Never {
        let argv = cStrings(arguments)
        // The environment goes to execve whole (setenv is not safe while other threads run).
        let envp = cStrings(environment.map { "\($0.key)=\($0.value)" })
        // This process becomes the command, and so do its signals: a mask or an ignored
        // signal would be inherited across exec.
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGCHLD] { signal(sig, SIG_DFL) }
        var reason = String(cString: strerror(ENOENT))
        for candidate in searchPath(arguments[0], path: environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin") {
            execve(candidate, argv, envp)
            reason = String(cString: strerror(errno))
        }
        FileHandle.standardError.write(Data("secureconf: cannot run \(arguments[0]): \(reason)\n".utf8))
        Glibc.exit(127)
    }
}

/// `secureconf run --watch`: the command as a child, restarted when its values change.
///
/// One reaper (`waitForExit`) collects the child's status; a restart (`replace`) asks the
/// child to stop and waits for the reaper. A termination signal (TERM, INT, QUIT) is passed
/// on and ends supervision: no restart follows it, and the command's status is run's.
final class Watcher: @unchecked Sendable {
    let client: SecureConfClient
    let options: WorkloadOptions
    let arguments: [String]
    let grace: Double
    private let lock = NSLock()
    private var child: pid_t = 0
    /// A restart is under way: the child's exit is not the command's end.
    private var replacing = false
    /// A termination signal arrived: no more restarts.
    private var terminating = false
    private var lastStatus: Int32?
    private var spawnFailed = false
    private var current: [String: String] = [:]
    private var signalSources: [any DispatchSourceSignal] = []

    init(client: SecureConfClient, options: WorkloadOptions, arguments: [String], grace: Double) {
        self.client = client
        self.options = options
        self.arguments = arguments
        self.grace = grace
    }

    private func log(_ text: String) { FileHandle.standardError.write(Data("secureconf run: \(text)\n".utf8)) }

    private var filter: EventFilter { EventFilter(environment: options.environment, category: options.category) }

    /// Runs until the command exits on its own (or after a termination signal passed on); its exit status.
    func run() async throws(ClientError) -> Int32 {
        // Signals first: one arriving before the command exists ends run without starting it.
        forwardSignals()
        // Subscribe before reading, so that no change between the two is missed. The stream
        // needs no user key: every change is re-read.
        var stream = try await client.events(filter, withValues: false)
        var lastID: String?
        let variables = try WorkloadVariables.flatten(try await client.entries(category: options.category), prefix: options.prefix)
        current = Dictionary(variables.map { ($0.name, $0.value) }, uniquingKeysWith: { $1 })
        if lock.withLock({ terminating }) { return 143 }
        try spawn(Run.merged(variables))
        let exited = Task { await self.waitForExit() }
        let follow = Task {
            while !Task.isCancelled {
                do {
                    for try await event in stream {
                        if let id = event.id { lastID = id }
                        if event.isChange || event.name == "reset" || event.name == "resync" { await self.recheck() }
                    }
                } catch {}
                if Task.isCancelled { return }
                // The stream ended: reconnect (any node), resume, and re-read in case a relayed change was missed.
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(500))
                    if let next = try? await self.client.events(self.filter, lastEventID: lastID, withValues: false) {
                        stream = next
                        await self.recheck()
                        break
                    }
                }
            }
        }
        let status = await exited.value
        follow.cancel()
        return status
    }

    /// Re-reads the values; restarts the command when the variables it was given differ.
    func recheck() async {
        guard let variables = try? WorkloadVariables.flatten(try await client.entries(category: options.category), prefix: options.prefix)
        else {
            log("could not re-read the values; the command keeps running with the ones it has")
            return
        }
        let fresh = Dictionary(variables.map { ($0.name, $0.value) }, uniquingKeysWith: { $1 })
        guard lock.withLock({ fresh != current && child > 0 && !terminating && !replacing }) else { return }
        log("a value changed; restarting the command")
        guard await stopForRestart() else { return }
        lock.withLock { current = fresh }
        do {
            try spawn(Run.merged(variables))
        } catch {
            log("\(error)")
            lock.withLock { spawnFailed = true }
        }
    }

    private func spawn(_ environment: [String: String]) throws(ClientError) {
        let argv = Run.cStrings(arguments)
        let envp = Run.cStrings(environment.map { "\($0.key)=\($0.value)" })
        var pid: pid_t = 0
        // The command starts with no signal blocked and every signal at its default.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let rc = posix_spawnp(&pid, arguments[0], nil, &attributes, argv, envp)
        guard rc == 0 else { throw ClientError(.unusable, "cannot run \(arguments[0]): \(String(cString: strerror(rc)))") }
        lock.withLock { child = pid }
    }

    /// SIGTERM, then SIGKILL after the grace period; returns once the reaper has the child,
    /// true when a new one may start (no termination signal came meanwhile).
    private func stopForRestart() async -> Bool {
        let pid = lock.withLock { () -> pid_t in
            replacing = true
            return child
        }
        guard pid > 0 else {
            lock.withLock { replacing = false }
            return false
        }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int64(grace * 1000)))
        var killed = false
        while lock.withLock({ child == pid }) {
            if !killed, ContinuousClock.now >= deadline {
                kill(pid, SIGKILL)
                killed = true
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return lock.withLock {
            replacing = false
            return !terminating
        }
    }

    /// The only reaper. Returns the command's status when it ends on its own, or after a
    /// termination signal; 127 when a restart could not start it.
    private func waitForExit() async -> Int32 {
        while true {
            let pid = lock.withLock { child }
            if pid > 0 {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                    let done = lock.withLock { () -> Bool in
                        child = 0
                        lastStatus = code
                        return !replacing
                    }
                    if done { return code }
                }
            } else {
                let (ended, status) = lock.withLock { () -> (Bool, Int32) in
                    if spawnFailed { return (true, 127) }
                    return (!replacing && terminating, lastStatus ?? 143)
                }
                if ended { return status }
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Signals to this process go to the command; TERM, INT and QUIT also end supervision.
    private func forwardSignals() {
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig)
            source.setEventHandler { [self] in
                let pid = lock.withLock { () -> pid_t in
                    if sig == SIGTERM || sig == SIGINT || sig == SIGQUIT { terminating = true }
                    return child
                }
                if pid > 0 { kill(pid, sig) }
            }
            source.resume()
            signalSources.append(source)
        }
    }
}
