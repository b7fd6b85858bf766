import Foundation
import GRDB

/// What a node snapshot holds, read back from it.
public struct SnapshotSummary: Sendable, CustomStringConvertible {
    public var saltFingerprint: String?
    public var liveEntries: Int
    public var revisions: Int
    public var auditRecords: Int
    public var bytes: Int64

    public var description: String {
        "\(liveEntries) entries, \(revisions) revisions, \(auditRecords) audit records, salt fingerprint \(saltFingerprint ?? "(none)"), \(bytes) bytes"
    }
}

public struct SnapshotError: Error, CustomStringConvertible {
    public let description: String
}

extension ConfigStore {
    /// An online, consistent copy of the whole store (every user's ciphertexts, the history,
    /// the audit trail and the metadata) through SQLite's backup API, written 0600 to a file
    /// that must not exist yet. Writers are not held up beyond SQLite's own page copying.
    public func snapshot(to path: String) throws -> SnapshotSummary {
        guard !FileManager.default.fileExists(atPath: path) else { throw SnapshotError(description: "\(path) already exists") }
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw SnapshotError(description: "cannot create \(path)")
        }
        do {
            let destination = try DatabaseQueue(path: path)
            try pool.backup(to: destination)
            try destination.close()
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw SnapshotError(description: "snapshot to \(path) failed: \(error)")
        }
        return try Self.summary(of: path)
    }

    /// What a snapshot file holds; refuses a file that is not a sound SecureConf store.
    public static func summary(of path: String) throws -> SnapshotSummary {
        var configuration = GRDB.Configuration()
        configuration.readonly = true
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            return try queue.read { db in
                guard try String.fetchOne(db, sql: "PRAGMA integrity_check") == "ok" else {
                    throw SnapshotError(description: "\(path) fails SQLite's integrity check")
                }
                guard try db.tableExists("revisions"), try db.tableExists("entries"), try db.tableExists("meta") else {
                    throw SnapshotError(description: "\(path) is not a SecureConf store")
                }
                return SnapshotSummary(
                    saltFingerprint: try String.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'salt_fingerprint'"),
                    liveEntries: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM entries WHERE deleted = 0") ?? 0,
                    revisions: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM revisions") ?? 0,
                    auditRecords: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM audit_log") ?? 0,
                    bytes: ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.int64Value ?? 0
                )
            }
        } catch let error as SnapshotError {
            throw error
        } catch {
            throw SnapshotError(description: "\(path) cannot be read as a SecureConf store: \(error)")
        }
    }

    /// Installs a snapshot as the store at `path`, which must hold no data (a fresh node, or
    /// one whose database was moved away). The snapshot is checked first (integrity, the
    /// audit chain) and must carry `expectedSaltFingerprint`, the salt the node will use.
    public static func restoreSnapshot(from snapshot: String, to path: String, expectedSaltFingerprint: String) async throws -> SnapshotSummary {
        let summary = try summary(of: snapshot)
        guard let fingerprint = summary.saltFingerprint else { throw SnapshotError(description: "\(snapshot) records no salt fingerprint") }
        guard fingerprint == expectedSaltFingerprint else {
            throw SnapshotError(
                description:
                    "the snapshot was taken under salt \(fingerprint), but this node's salt file has fingerprint \(expectedSaltFingerprint); restore the salt file of the node it came from"
            )
        }
        if FileManager.default.fileExists(atPath: path) {
            let existing = try ConfigStore(configuration: .init(path: path, nodeID: "127.0.0.1:0"))
            let hasData = try existing.hasData()
            await existing.close()
            guard !hasData else {
                throw SnapshotError(description: "\(path) already holds data; move it away (the node stopped) before restoring a snapshot over it")
            }
        }
        let source = try DatabaseQueue(
            path: snapshot,
            configuration: {
                var c = GRDB.Configuration(); c.readonly = true; return c
            }()
        )
        let verification = try await source.read { try ConfigStore.verifyAuditChain($0) }
        guard verification.valid else {
            throw SnapshotError(
                description: "the snapshot's audit chain is broken at record \(verification.firstBroken.map(String.init) ?? "?"); not restored"
            )
        }
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw SnapshotError(description: "cannot create \(path)")
        }
        let destination = try DatabaseQueue(path: path)
        try source.backup(to: destination)
        try destination.close()
        try source.close()
        return summary
    }
}
