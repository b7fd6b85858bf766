import ArgumentParser
import Foundation
import Logging
import SecureConfClient
import SecureConfCore
import SecureConfJSON
import SecureConfServer

#if canImport(Glibc)
import Glibc
#endif

/// A password from `SECURECONF_PASSWORD`, else typed at the terminal (twice when `confirm`):
/// never an argument (argv shows in process lists).
func readPassword(prompt: String, confirm: Bool) throws -> String {
    if let given = ProcessInfo.processInfo.environment["SECURECONF_PASSWORD"], !given.isEmpty { return given }
    guard isatty(STDIN_FILENO) != 0, let first = getpass(prompt) else {
        FileHandle.standardError.write(Data("secureconf: set SECURECONF_PASSWORD or run on a terminal to type the password\n".utf8))
        throw ExitCode(2)
    }
    let password = String(cString: first)
    if confirm, let again = getpass("Again: "), String(cString: again) != password {
        FileHandle.standardError.write(Data("secureconf: the passwords differ\n".utf8))
        throw ExitCode(2)
    }
    return password
}

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage users on this node's data directory (OSC_AUTH_MODE=tokens); the first administrator is made here.",
        subcommands: [Add.self]
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a user in this node's store (the node may be running; in a cluster it replicates like any write).",
            discussion: "The password comes from SECURECONF_PASSWORD or is typed at the terminal. Later users: POST /auth/users."
        )
        @Argument(help: "The user name (letters, digits, '.', '_', '-', '@').") var name: String
        @Option(help: "admin, writer or reader.") var role: String = "reader"
        @Option(help: "This node's SQLite database file (OSC_DATABASE_PATH).") var databasePath: String?
        @Option(help: "This node's salt file (OSC_SALT_FILE_PATH).") var saltFile: String?
        @Option(help: "The .env file to read.") var envFile: String = ".env"

        func run() async throws {
            guard let role = Role(rawValue: role) else {
                FileHandle.standardError.write(Data("secureconf: --role must be admin, writer or reader\n".utf8))
                throw ExitCode(2)
            }
            let c = try nodeConfiguration(envFile: envFile, databasePath: databasePath, saltFile: saltFile)
            let password = try readPassword(prompt: "Password for \(name): ", confirm: true)
            do {
                let logger = Logger(label: "secureconf-users")
                // On PostgreSQL the store opens asynchronously (the node's own start); on
                // SQLite the node opens its file without asking cluster peers for a salt.
                let node =
                    c.database == nil
                    ? try SecureConfNode(configuration: c, logger: logger) : try await SecureConfNode.start(configuration: c, logger: logger)
                let user = try await node.identity.addUser(name: name, password: password, role: role, tenant: nil, policies: nil, caller: nil)
                await node.close()
                print("created user \(user.name) (\(user.role.rawValue))")
            } catch let error as ServiceError {
                FileHandle.standardError.write(Data("secureconf: \(error.detail)\n".utf8))
                throw ExitCode(1)
            } catch {
                FileHandle.standardError.write(Data("secureconf: users add: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Log in to a node in tokens mode and keep the token in a 0600 file (default ~/.config/secureconf/token, or $SECURECONF_TOKEN_FILE).",
        discussion: "The password comes from SECURECONF_PASSWORD or is typed at the terminal. Later client commands send the token."
    )
    @Option(help: "The node's base URL.") var url: String = "http://127.0.0.1:9000"
    @Option(help: "The user name.") var username: String
    @Option(help: "Where to keep the token (default: $SECURECONF_TOKEN_FILE, else ~/.config/secureconf/token).") var tokenFile: String?
    @Option(help: "PEM certificate authorities to verify an https node against (default: $SECURECONF_CA_FILE).") var caFile: String?

    func run() async throws {
        let password = try readPassword(prompt: "Password for \(username): ", confirm: false)
        try await runClient {
            let client = SecureConfClient(
                baseURL: url,
                credentials: Credentials(),
                caFile: caFile ?? ProcessInfo.processInfo.environment[SecureConfClient.caFileVariable]
            )
            let reply = try await client.send(.login(username: username, password: password))
            guard let parsed = try? JSONParser.parse(Array(reply)), let token = parsed["access_token"]?.stringValue else {
                throw ClientError(.unreachable, "unexpected reply to POST /auth/login")
            }
            let path = tokenFile ?? Credentials.tokenFilePath()
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
            try AtomicFile.write(Data((token + "\n").utf8), to: path)
            print("logged in as \(username); token kept in \(path)")
        }
    }
}
