import Foundation
import SecureConfCore
import SecureConfStore

/// `secureconf backup` and `secureconf restore-backup`: a whole node's store, snapshotted
/// online and installed into an empty node whose salt file is the one it was taken under.
public enum NodeSnapshot {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Snapshots are of SQLite files: a node on PostgreSQL has its data backed up with the database.
    static func sqliteOnly(_ c: NodeConfiguration) throws {
        if c.database != nil {
            throw Failure(
                description: "this node keeps its data in PostgreSQL (OSC_DATABASE_URL): back it up with pg_dump and restore it with pg_restore"
            )
        }
    }

    public static func backup(configuration c: NodeConfiguration, to output: String) async throws -> String {
        try sqliteOnly(c)
        guard FileManager.default.fileExists(atPath: c.databasePath) else { throw Failure(description: "no store at \(c.databasePath)") }
        let store = try ConfigStore(configuration: .init(path: c.databasePath, nodeID: c.nodeID))
        do {
            let summary = try store.snapshot(to: output)
            await store.close()
            return "snapshot \(output): \(summary)"
        } catch {
            await store.close()
            throw error
        }
    }

    public static func restore(configuration c: NodeConfiguration, from input: String) async throws -> String {
        try sqliteOnly(c)
        guard let salt = try SaltFile.read(at: c.saltFilePath) else {
            throw Failure(description: "the salt file \(c.saltFilePath) is missing: restore it from the backed-up node first")
        }
        let summary = try await ConfigStore.restoreSnapshot(from: input, to: c.databasePath, expectedSaltFingerprint: SaltFile.fingerprint(salt))
        return "restored \(c.databasePath): \(summary)"
    }
}
