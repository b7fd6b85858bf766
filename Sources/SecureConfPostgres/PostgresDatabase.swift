import Foundation
import Logging
import NIOSSL
import PostgresNIO
import SecureConfStore
import Synchronization

/// What a node reports about its database (Prometheus, through the server's metrics).
public protocol PostgresObserver: Sendable {
    /// Operations running now, and how many of them wait for a connection (beyond the pool's size).
    func databaseOperations(inUse: Int, waiting: Int)
    /// One operation ended: how long it took, and how it failed (nil: it did not).
    func databaseOperationFinished(seconds: Double, failure: String?)
}

/// The connection pools of a node's PostgreSQL hosts (a primary and its standbys) and the
/// one every operation goes to: the first writable host found, looked for again when the
/// one in use fails or turns out read-only. Every operation has a deadline; what fails
/// leaves as `StoreError.unavailable` with a message that names no query, value or password.
final class PostgresDatabase: Sendable {
    let settings: PostgresSettings
    let timeout: Duration
    let logger: Logger
    let observer: (any PostgresObserver)?
    /// Operations running now (each holds or waits for one connection).
    private let inFlight = Atomic(0)
    private let clients: [PostgresClient]
    private let runs: Mutex<[Task<Void, Never>]> = Mutex([])
    /// The index of the host operations go to.
    private let active = Mutex(0)
    /// Whether a host answered the last look; while none does, operations fail at once
    /// instead of each waiting out its deadline.
    private let reachable = Atomic(true)
    /// Whether the background look for a (writable) host runs.
    private let recovering = Mutex(false)
    /// Why the last look at a host got no answer (words naming no password).
    let lastProblem = Mutex<String?>(nil)

    init(settings: PostgresSettings, timeout: Duration, logger: Logger, observer: (any PostgresObserver)?) {
        self.observer = observer
        self.settings = settings
        self.timeout = timeout
        self.logger = logger
        clients = settings.hosts.map { host in
            var configuration = PostgresClient.Configuration(
                host: host.name,
                port: host.port,
                username: settings.user,
                password: settings.password,
                database: settings.database,
                tls: Self.tls(settings)
            )
            configuration.options.maximumConnections = settings.maxConnections
            configuration.options.minimumConnections = 0
            configuration.options.connectTimeout = .milliseconds(Int64(settings.connectTimeoutSeconds * 1000))
            configuration.options.additionalStartupParameters = [("application_name", "secureconf")]
            return PostgresClient(
                configuration: configuration,
                backgroundLogger: Logger(label: "secureconf.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
            )
        }
    }

    static func tls(_ settings: PostgresSettings) -> PostgresClient.Configuration.TLS {
        let config = tlsConfiguration(settings)
        switch settings.sslMode {
        case .disable: return .disable
        case .allow, .prefer: return .prefer(config)
        case .require, .verifyCA, .verifyFull: return .require(config)
        }
    }

    /// libpq's meaning of `sslmode`: require encrypts without checking the server;
    /// verify-ca checks its certificate against `sslrootcert`, verify-full its name too.
    static func tlsConfiguration(_ settings: PostgresSettings) -> TLSConfiguration {
        var config = TLSConfiguration.makeClientConfiguration()
        switch settings.sslMode {
        case .disable, .allow, .prefer, .require:
            config.certificateVerification = .none
        case .verifyCA:
            config.certificateVerification = .noHostnameVerification
        case .verifyFull:
            config.certificateVerification = .fullVerification
        }
        if let ca = settings.sslRootCert, settings.sslMode == .verifyCA || settings.sslMode == .verifyFull { config.trustRoots = .file(ca) }
        return config
    }

    /// Runs the pools and finds the writable host (or, when none answers as one within the
    /// deadline, the first that answers at all).
    func start() async throws {
        runs.withLock { tasks in tasks = clients.map { client in Task { await client.run() } } }
        if try await select() == nil {
            // The pool keeps why it cannot connect to itself (it only retries): one connection
            // of its own says what is wrong (refused, the password, no such database).
            await diagnose(settings.hosts[0])
            throw PostgresStoreError.unreachable(
                "no PostgreSQL host answered (\(settings.hosts.map(\.description).joined(separator: ", "))): \(lastProblem.withLock { $0 } ?? "no answer"); check OSC_DATABASE_URL, the password and pg_hba.conf"
            )
        }
    }

    /// Connects once to `host`, outside the pool, to learn why the pool cannot.
    private func diagnose(_ host: PostgresSettings.Host) async {
        let settings = self.settings
        do {
            let tls: PostgresConnection.Configuration.TLS
            switch settings.sslMode {
            case .disable: tls = .disable
            case .allow, .prefer: tls = .prefer(try NIOSSLContext(configuration: Self.tlsConfiguration(settings)))
            default: tls = .require(try NIOSSLContext(configuration: Self.tlsConfiguration(settings)))
            }
            var configuration = PostgresConnection.Configuration(
                host: host.name,
                port: host.port,
                username: settings.user,
                password: settings.password,
                database: settings.database,
                tls: tls
            )
            configuration.options.connectTimeout = .milliseconds(Int64(settings.connectTimeoutSeconds * 1000))
            let quiet = Logger(label: "secureconf.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
            let connect = configuration
            let connection = try await Self.deadline(timeout) {
                try await PostgresConnection.connect(configuration: connect, id: 0, logger: quiet)
            }
            try? await connection.close()
        } catch {
            lastProblem.withLock { $0 = Self.reason(error) }
        }
    }

    func shutdown() async {
        let tasks = runs.withLock { tasks in
            defer { tasks = [] }
            return tasks
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }

    /// The host now in use.
    var activeHost: PostgresSettings.Host { settings.hosts[active.withLock { $0 }] }

    /// Looks at every host in order; the first writable one becomes the active host. Returns
    /// whether any answered, and whether it was writable; nil when none answered.
    @discardableResult
    func select() async throws -> Bool? {
        // Every host is asked at once: a dead one (whose answer never comes before the
        // deadline) does not delay finding the live one.
        let probeTimeout = min(timeout, .seconds(5))
        let answers = await withTaskGroup(of: (Int, Bool?).self) { group in
            for (i, client) in clients.enumerated() {
                group.addTask {
                    do {
                        return (
                            i,
                            try await Self.deadline(probeTimeout) {
                                var recovering = true
                                for try await r in try await client.query("SELECT pg_is_in_recovery()").decode(Bool.self) { recovering = r }
                                return recovering
                            }
                        )
                    } catch {
                        self.lastProblem.withLock { $0 = Self.reason(error) }
                        return (i, nil)
                    }
                }
            }
            var answers = [Bool?](repeating: nil, count: clients.count)
            for await (i, recovering) in group {
                answers[i] = recovering
                // A writable host ends the look: there is one primary.
                if recovering == false {
                    group.cancelAll()
                    break
                }
            }
            return answers
        }
        if let writable = answers.firstIndex(of: false) {
            let previous = active.withLock { a in
                defer { a = writable }
                return a
            }
            if previous != writable { logger.notice("PostgreSQL: using the writable host", metadata: ["host": "\(settings.hosts[writable])"]) }
            return true
        }
        if let readOnly = answers.firstIndex(of: true) {
            active.withLock { $0 = readOnly }
            return false
        }
        return nil
    }

    /// After a failure that may mean the host went away or was demoted: look for a writable
    /// host again, every half second in the background, until one answers as writable.
    /// `lost`: no host may be answering now (the connection failed or timed out).
    private func recover(lost: Bool) {
        if lost { reachable.store(false, ordering: .relaxed) }
        let start = recovering.withLock { r in
            defer { r = true }
            return !r
        }
        guard start else { return }
        Task {
            while true {
                let found = try? await select()
                reachable.store(found != nil, ordering: .relaxed)
                if found == true { break }
                try? await Task.sleep(for: .milliseconds(500))
                if runs.withLock({ $0.isEmpty }) { break }
            }
            recovering.withLock { $0 = false }
        }
    }

    /// Runs `body` against the active host within the deadline.
    func run<T: Sendable>(timeout: Duration? = nil, _ body: @escaping @Sendable (PostgresClient) async throws -> T) async throws -> T {
        guard reachable.load(ordering: .relaxed) else {
            throw StoreError.unavailable(
                "PostgreSQL (\(settings.hosts.map(\.description).joined(separator: ", "))) is unreachable (\(lastProblem.withLock { $0 } ?? "no answer")); retrying"
            )
        }
        let used = active.withLock { $0 }
        let client = clients[used]
        let started = ContinuousClock.now
        let running = inFlight.add(1, ordering: .relaxed).newValue
        observer?.databaseOperations(inUse: min(running, settings.maxConnections), waiting: max(0, running - settings.maxConnections))
        var failed: String? = "error"
        defer {
            let left = inFlight.subtract(1, ordering: .relaxed).newValue
            observer?.databaseOperations(inUse: min(left, settings.maxConnections), waiting: max(0, left - settings.maxConnections))
            let elapsed = ContinuousClock.now - started
            observer?.databaseOperationFinished(
                seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
                failure: failed
            )
        }
        do {
            let value = try await Self.deadline(timeout ?? self.timeout) { try await body(client) }
            failed = nil
            return value
        } catch let error as StoreError {
            // The store's own refusals (a key that exists, a wrong key) are answers, not failures.
            if case .unavailable = error { failed = "unavailable" } else { failed = nil }
            throw error
        } catch {
            failed = error is DeadlineExceeded ? "timeout" : "database"
            // A failure on a host left behind meanwhile (a request in flight when the primary
            // died) says nothing about the host in use now.
            guard used == active.withLock({ $0 }) else {
                throw StoreError.unavailable("PostgreSQL (\(settings.hosts[used])) went away during the request; retry")
            }
            throw failure(error)
        }
    }

    /// A read-write transaction (BEGIN … COMMIT; ROLLBACK when `body` throws, its error
    /// passed on as it is).
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresTransaction) async throws -> T) async throws -> T {
        try await within("BEGIN", body)
    }

    /// A read-only transaction over one snapshot (REPEATABLE READ): several queries that
    /// must agree with each other.
    func snapshot<T: Sendable>(timeout: Duration? = nil, _ body: @escaping @Sendable (PostgresTransaction) async throws -> T) async throws -> T {
        try await within("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", timeout: timeout, body)
    }

    private func within<T: Sendable>(
        _ begin: PostgresQuery,
        timeout: Duration? = nil,
        _ body: @escaping @Sendable (PostgresTransaction) async throws -> T
    ) async throws -> T {
        let logger = self.logger
        return try await run(timeout: timeout) { client in
            try await client.withConnection { connection in
                try await connection.execute(begin, logger: logger)
                do {
                    let value = try await body(PostgresTransaction(connection, logger: logger))
                    // Past its deadline the caller was told 503: what it did must not commit.
                    if Task.isCancelled { throw CancellationError() }
                    try await connection.execute("COMMIT", logger: logger)
                    return value
                } catch {
                    try? await connection.execute("ROLLBACK", logger: logger)
                    throw error
                }
            }
        }
    }

    /// Calls `notified` for every notification on `channel`, until the connection fails.
    func listen(on channel: String, _ notified: @escaping @Sendable () async -> Void) async throws {
        let client = clients[active.withLock { $0 }]
        do {
            try await client.withConnection { connection in
                for try await _ in try await connection.listen(channel) { await notified() }
            }
        } catch {
            throw failure(error)
        }
    }

    /// Runs `body` to completion from synchronous code (start-up's metadata), blocking the
    /// calling thread, which must not be one of the event loops'.
    func blocking<T: Sendable>(_ body: @escaping @Sendable (PostgresClient) async throws -> T) throws -> T {
        let outcome = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do {
                let value = try await self.run(body)
                outcome.withLock { $0 = .success(value) }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        guard let result = outcome.withLock({ $0 }) else { throw StoreError.unavailable("PostgreSQL gave no answer") }
        return try result.get()
    }

    /// What an error of the driver or of the deadline means to a caller: storage unavailable,
    /// with why in words that hold no query text, bind value or password.
    private func failure(_ error: any Error) -> StoreError {
        if error is DeadlineExceeded {
            // Slow is not gone (a busy pool, a long query): look for the writable host, but
            // keep serving meanwhile.
            recover(lost: false)
            return .unavailable("PostgreSQL (\(activeHost)) did not answer within \(timeout)")
        }
        guard let psql = error as? PSQLError else {
            if error is CancellationError { return .unavailable("cancelled") }
            recover(lost: true)
            return .unavailable("PostgreSQL (\(activeHost)): \(type(of: error))")
        }
        if psql.code == .server {
            let state = psql.serverInfo?[.sqlState] ?? "?"
            switch state {
            case "25006":
                recover(lost: false)
                return .unavailable("PostgreSQL (\(activeHost)) is read-only (a standby): writes wait for a writable primary")
            case "57P01", "57P02", "57P03", "08000", "08003", "08006":
                recover(lost: true)
                return .unavailable("PostgreSQL (\(activeHost)) is shutting down or starting (SQLSTATE \(state))")
            case "28P01", "28000":
                return .unavailable(
                    "PostgreSQL (\(activeHost)) refused the credentials (SQLSTATE \(state)); check OSC_DATABASE_URL's user and password"
                )
            case "40001", "40P01":
                return .unavailable("PostgreSQL (\(activeHost)): the transaction conflicted with another (SQLSTATE \(state)); retry")
            default:
                logger.error("PostgreSQL refused a statement", metadata: ["sqlstate": "\(state)", "host": "\(activeHost)"])
                return .unavailable("PostgreSQL (\(activeHost)) refused a statement (SQLSTATE \(state))")
            }
        }
        recover(lost: true)
        return .unavailable("PostgreSQL (\(activeHost)) is unreachable (\(psql.code))")
    }

    struct DeadlineExceeded: Error {}

    /// A statement PostgreSQL refused inside a transaction that goes on (a savepoint undone):
    /// 503-class, named by its SQLSTATE only.
    static func refusal(_ error: any Error) -> StoreError {
        .unavailable("PostgreSQL: \(reason(error))")
    }

    /// Why a connection attempt failed, in words that name no password, query or value.
    static func reason(_ error: any Error) -> String {
        if error is DeadlineExceeded { return "no answer in time" }
        guard let psql = error as? PSQLError else { return "\(type(of: error))" }
        if psql.code == .server {
            let state = psql.serverInfo?[.sqlState] ?? "?"
            switch state {
            case "28P01", "28000": return "the credentials were refused (SQLSTATE \(state))"
            case "3D000": return "the database does not exist (SQLSTATE \(state))"
            case "57P03": return "the server is starting up (SQLSTATE \(state))"
            default: return "the server refused (SQLSTATE \(state))"
            }
        }
        if psql.code == .connectionError { return "the connection failed (refused, or no route)" }
        return "\(psql.code)"
    }

    /// `body`'s result, or `DeadlineExceeded` once `timeout` has passed (`body` is then
    /// cancelled and left to finish on its own: a hung socket never holds the caller).
    static func deadline<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let race = DeadlineRace<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                race.pending.withLock { $0 = continuation }
                let work = Task {
                    let result: Result<T, any Error>
                    do { result = .success(try await body()) } catch { result = .failure(error) }
                    race.tasks.withLock { $0.timer?.cancel() }
                    race.take()?.resume(with: result)
                }
                let timer = Task {
                    do { try await Task.sleep(for: timeout) } catch { return }
                    guard let c = race.take() else { return }
                    race.tasks.withLock { $0.work?.cancel() }
                    c.resume(throwing: DeadlineExceeded())
                }
                race.tasks.withLock { $0 = (work, timer) }
            }
        } onCancel: {
            let (work, timer) = race.tasks.withLock { $0 }
            work?.cancel()
            timer?.cancel()
            race.take()?.resume(throwing: CancellationError())
        }
    }
}

/// The state an operation and its deadline race over: whoever takes the continuation first
/// resumes it.
private final class DeadlineRace<T: Sendable>: Sendable {
    let pending = Mutex<CheckedContinuation<T, any Error>?>(nil)
    let tasks = Mutex<(work: Task<Void, Never>?, timer: Task<Void, Never>?)>((nil, nil))

    func take() -> CheckedContinuation<T, any Error>? {
        pending.withLock { c in
            defer { c = nil }
            return c
        }
    }
}
