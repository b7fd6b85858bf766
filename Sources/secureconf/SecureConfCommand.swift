import ArgumentParser
import Foundation
import Hummingbird
import Logging
import SecureConfServer

@main
struct SecureConfCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secureconf",
        abstract: "A clustered, encrypted configuration and secrets node (OpenSecureConf-compatible).",
        subcommands: [
            Serve.self, Version.self, Variables.self, KDFBenchmark.self, TokenBenchmark.self, Versions.self, Diff.self, Rollback.self, Restore.self,
            Audit.self,
            ImportOSC.self, Backup.self, RestoreBackup.self, ExportValues.self, Run.self, Agent.self, Users.self, Login.self,
        ],
        defaultSubcommand: Serve.self
    )
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    func run() { print("secureconf \(SecureConfVersion.string)") }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a node.",
        discussion: "Configured by OpenSecureConf's OSC_* environment variables, a .env file in the working directory, and these flags (flags win)."
    )

    @Option(help: "Address to listen on (OSC_HOST).") var host: String?
    @Option(help: "Port to listen on (OSC_HOST_PORT).") var port: Int?
    @Option(help: "SQLite database file (OSC_DATABASE_PATH).") var databasePath: String?
    @Option(help: "Salt file (OSC_SALT_FILE_PATH).") var saltFile: String?
    @Option(help: "Log level (OSC_LOG_LEVEL).") var logLevel: String?
    @Option(help: "json or console (OSC_LOG_FORMAT).") var logFormat: String?
    @Option(help: "Log file, rotated by size (OSC_LOG_FILE).") var logFile: String?
    @Option(help: "Require X-API-Key: true or false (OSC_API_KEY_REQUIRED).") var apiKeyRequired: String?
    @Option(help: "HTTP event-loop threads (OSC_WORKERS).") var workers: Int?
    @Option(help: "The .env file to read.") var envFile: String = ".env"

    func run() async throws {
        // A file-size limit or a full disk makes writes fail (and requests get 503); it must not kill the process.
        signal(SIGXFSZ, SIG_IGN)
        // SIGHUP reloads the cluster's node list once the node runs; before that (a salt
        // bootstrap can wait a while) it must not end the process.
        signal(SIGHUP, SIG_IGN)
        var overrides: [String: String] = [:]
        overrides["OSC_HOST"] = host
        overrides["OSC_HOST_PORT"] = port.map(String.init)
        overrides["OSC_DATABASE_PATH"] = databasePath
        overrides["OSC_SALT_FILE_PATH"] = saltFile
        overrides["OSC_LOG_LEVEL"] = logLevel
        overrides["OSC_LOG_FORMAT"] = logFormat
        overrides["OSC_LOG_FILE"] = logFile
        overrides["OSC_API_KEY_REQUIRED"] = apiKeyRequired
        overrides["OSC_WORKERS"] = workers.map(String.init)

        let configuration: NodeConfiguration
        do {
            configuration = try NodeConfiguration.load(environment: ProcessInfo.processInfo.environment, dotEnvPath: envFile, overrides: overrides)
        } catch {
            FileHandle.standardError.write(Data("secureconf: invalid configuration: \(error)\n".utf8))
            throw ExitCode(2)
        }

        let metrics = ServerMetrics()
        let sink = LogSink(
            filePath: configuration.logFile,
            maxBytes: configuration.logMaxBytes,
            backups: configuration.logBackupCount,
            onDrop: { metrics.logLinesDropped.increment() }
        )
        let level = Logger.Level(rawValue: LogLevelNames.swiftLogName(configuration.logLevel)) ?? .info
        LoggingSystem.bootstrap { label in
            SecureConfLogHandler(label: label, nodeID: configuration.nodeID, level: level, format: configuration.logFormat, sink: sink)
        }
        let logger = Logger(label: "secureconf")

        let node: SecureConfNode
        do {
            node = try await SecureConfNode.start(configuration: configuration, metrics: metrics, logger: logger)
        } catch {
            logger.critical("refusing to start", metadata: ["reason": "\(error)"])
            sink.close()
            FileHandle.standardError.write(Data("secureconf: refusing to start: \(error)\n".utf8))
            throw ExitCode(1)
        }
        logger.info(
            "starting node",
            metadata: [
                "listen": "\(configuration.host):\(configuration.port)", "database": "\(configuration.databaseLabel)",
                "salt_fingerprint": "\(node.saltFingerprint)", "entries": "\(node.store.liveEntryCount)",
                "api_key_required": "\(configuration.apiKeyRequired)",
            ]
        )
        let built = Result {
            try buildApplication(node: node) { port in
                logger.info("listening", metadata: ["port": "\(port)", "tls": "\(configuration.tlsEnabled)"])
            }
        }
        if case .failure(let error) = built {
            let reason = "\(error)"
            logger.critical("refusing to start", metadata: ["reason": "\(reason)"])
            await node.close()
            sink.close()
            FileHandle.standardError.write(Data("secureconf: refusing to start: \(reason)\n".utf8))
            throw ExitCode(1)
        }
        guard case .success(let app) = built else { throw ExitCode(1) }
        do {
            let environment = ProcessInfo.processInfo.environment
            let dotEnv = envFile
            let flags = overrides
            try await runUntilSignalled(app, node: node) {
                try NodeConfiguration.load(environment: environment, dotEnvPath: dotEnv, overrides: flags).clusterNodes
            }
        } catch {
            logger.critical("server stopped with an error", metadata: ["error": "\(error)"])
            await node.close()
            sink.close()
            throw ExitCode(1)
        }
        logger.info("stopped")
        sink.close()
    }
}

struct ImportOSC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-osc",
        abstract: "Import an OpenSecureConf 2.x or 3.x data directory into this node's store (no user key needed).",
        discussion: """
            Keeps every ciphertext as it is: the same user keys read the same values afterwards. Adopts OpenSecureConf's \
            salt when this node has neither data nor a salt, and refuses when the salts differ. Idempotent. The node's store \
            is the one OSC_DATABASE_PATH and OSC_SALT_FILE_PATH name (environment, .env, or the flags below); the node may be \
            stopped or running.
            """
    )

    @Option(help: "OpenSecureConf's database (configurations.db).") var database: String
    @Option(help: "OpenSecureConf's salt file (encryption.salt).") var salt: String
    @Option(help: "This node's SQLite database file (OSC_DATABASE_PATH).") var databasePath: String?
    @Option(help: "This node's salt file (OSC_SALT_FILE_PATH).") var saltFile: String?
    @Option(help: "The .env file to read.") var envFile: String = ".env"

    func run() async throws {
        let configuration = try nodeConfiguration(envFile: envFile, databasePath: databasePath, saltFile: saltFile)
        var logger = Logger(label: "secureconf.import")
        logger.logLevel = .warning
        do {
            let report = try await OSCImport.run(configuration: configuration, database: database, salt: salt, logger: logger)
            print(report.description)
        } catch {
            FileHandle.standardError.write(Data("secureconf: import-osc: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// This node's configuration for an offline command: the environment, the .env file, and the
/// store paths given as flags.
func nodeConfiguration(envFile: String, databasePath: String?, saltFile: String?) throws -> NodeConfiguration {
    var overrides: [String: String] = [:]
    overrides["OSC_DATABASE_PATH"] = databasePath
    overrides["OSC_SALT_FILE_PATH"] = saltFile
    do {
        return try NodeConfiguration.load(environment: ProcessInfo.processInfo.environment, dotEnvPath: envFile, overrides: overrides)
    } catch {
        FileHandle.standardError.write(Data("secureconf: invalid configuration: \(error)\n".utf8))
        throw ExitCode(2)
    }
}

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an online, consistent snapshot of this node's whole store (every user's ciphertexts, history, audit trail).",
        discussion:
            "Through SQLite's backup API; the node may be running. The file is created 0600 and holds no salt: keep the salt file's backup separately."
    )
    @Option(help: "The snapshot file to create (must not exist).") var output: String
    @Option(help: "This node's SQLite database file (OSC_DATABASE_PATH).") var databasePath: String?
    @Option(help: "The .env file to read.") var envFile: String = ".env"

    func run() async throws {
        let c = try nodeConfiguration(envFile: envFile, databasePath: databasePath, saltFile: nil)
        do {
            print(try await NodeSnapshot.backup(configuration: c, to: output))
        } catch {
            FileHandle.standardError.write(Data("secureconf: backup: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct RestoreBackup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore-backup",
        abstract: "Install a snapshot made by `secureconf backup` as this node's store (the node stopped, its store empty).",
        discussion: "The snapshot is checked first: SQLite integrity, the audit chain, and its salt fingerprint against this node's salt file."
    )
    @Option(help: "The snapshot file.") var input: String
    @Option(help: "This node's SQLite database file (OSC_DATABASE_PATH).") var databasePath: String?
    @Option(help: "This node's salt file (OSC_SALT_FILE_PATH).") var saltFile: String?
    @Option(help: "The .env file to read.") var envFile: String = ".env"

    func run() async throws {
        let c = try nodeConfiguration(envFile: envFile, databasePath: databasePath, saltFile: saltFile)
        do {
            print(try await NodeSnapshot.restore(configuration: c, from: input))
        } catch {
            FileHandle.standardError.write(Data("secureconf: restore-backup: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
