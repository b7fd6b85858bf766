import Foundation
import Logging
import SecureConfCore
import SecureConfCrypto
import SecureConfStore

/// `secureconf import-osc`: an OpenSecureConf 2.x or 3.x data directory into this node's store.
/// Ciphertexts are kept as they are (same salt, same Fernet tokens, no user key needed); the
/// salt is adopted when this node has neither data nor a salt of its own, and the import is
/// refused when the salts differ. Idempotent: a row already imported is skipped; a key this
/// node already holds with another value is left alone and reported.
public enum OSCImport {
    public struct Report: Sendable, CustomStringConvertible {
        public var sourceVersion = ""
        public var adoptedSalt = false
        public var imported = 0
        public var skipped = 0
        public var refused: [(key: String, environment: String, reason: String)] = []

        public var description: String {
            var lines = [
                "OpenSecureConf \(sourceVersion) database: \(imported) imported, \(skipped) skipped (already here), \(refused.count) refused"
                    + (adoptedSalt ? "; the node adopted its salt" : "")
            ]
            for r in refused { lines.append("refused \(r.environment)/\(r.key): \(r.reason)") }
            return lines.joined(separator: "\n")
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public static func run(configuration c: NodeConfiguration, database: String, salt saltPath: String, logger: Logger) async throws -> Report {
        var report = Report()
        if c.database != nil {
            throw Failure(
                description:
                    "import writes a SQLite store: run it for a node without OSC_DATABASE_URL, or import through the HTTP API of a node on PostgreSQL"
            )
        }
        guard let oscSalt = try? SaltFile.read(at: saltPath), oscSalt.count >= 16 else {
            throw Failure(description: "cannot read OpenSecureConf's salt file \(saltPath) (64 random bytes)")
        }
        let (version, rows) = try OSCDatabase.rows(at: database)
        report.sourceVersion = version
        // This node's salt must be OpenSecureConf's: the tokens are encrypted under it.
        let directory = URL(fileURLWithPath: c.databasePath).deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var storeConfiguration = ConfigStore.Configuration(path: c.databasePath, nodeID: c.nodeID)
        storeConfiguration.maxVersions = c.maxVersions
        storeConfiguration.maxClockAheadMillis = Int64(c.clusterMaxClockSkewSeconds * 1000)
        let store = try ConfigStore(configuration: storeConfiguration, logger: logger)
        do {
            if let own = try SaltFile.read(at: c.saltFilePath) {
                guard OpenSSL.constantTimeEquals(own, oscSalt) else {
                    throw Failure(
                        description:
                            "the salts differ: this node's \(c.saltFilePath) (fingerprint \(SaltFile.fingerprint(own))) is not OpenSecureConf's \(saltPath) (fingerprint \(SaltFile.fingerprint(oscSalt))); its values can only be read under its own salt. Import into a node that has no data and no salt yet"
                    )
                }
            } else {
                guard !(try store.hasData()), try store.metadata("salt_fingerprint") == nil else {
                    throw Failure(description: "this node holds data but its salt file \(c.saltFilePath) is missing; restore it first")
                }
                try SaltFile.create(at: c.saltFilePath, salt: oscSalt)
                report.adoptedSalt = true
            }
            _ = try NodeSalt.open(
                path: c.saltFilePath,
                store: store,
                databasePath: c.databasePath,
                kdfIterations: Int(c.kdfIterations),
                logger: logger
            )
            let rules = RevisionRules(maxAheadMillis: Int64(c.clusterMaxClockSkewSeconds * 1000), maxCiphertextBytes: c.maxCiphertextBytes)
            for row in rows {
                let environment = (row.environment?.isEmpty ?? true) ? EntryName.defaultEnvironment : row.environment!
                func refuse(_ reason: String) { report.refused.append((row.key, environment, reason)) }
                guard let issued = Fernet.wellFormedTimestamp(of: row.ciphertext) else {
                    refuse("the stored value is not a Fernet token")
                    continue
                }
                let issuedMicros = Int64(clamping: issued) * 1_000_000
                let created = row.createdAt ?? issuedMicros
                let updated = max(row.updatedAt ?? issuedMicros, created)
                let imported = ImportedRow(
                    environment: environment,
                    key: row.key,
                    category: (row.category?.isEmpty ?? true) ? nil : row.category,
                    ciphertext: row.ciphertext,
                    createdAt: created,
                    updatedAt: updated
                )
                // The revision every peer will check: refuse here what they would refuse.
                let millis = max(Int64(clamping: issued) * 1000, updated / 1000)
                let probe = Revision(
                    environment: environment,
                    key: row.key,
                    category: imported.category,
                    ciphertext: row.ciphertext,
                    hlc: (millis << 16) | 1,
                    origin: c.nodeID,
                    deleted: false,
                    createdAt: created,
                    updatedAt: updated
                )
                do {
                    try rules.check(probe)
                } catch {
                    refuse("\(error)")
                    continue
                }
                switch try await store.importRow(imported, issuedSeconds: issued) {
                case .imported: report.imported += 1
                case .alreadyThere: report.skipped += 1
                case .exists: refuse("this node already holds the key with another value (left as it is)")
                }
            }
        } catch {
            await store.close()
            throw error
        }
        await store.close()
        return report
    }
}
