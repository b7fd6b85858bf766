import Foundation
import Logging
import SecureConfCluster
import SecureConfCrypto
import SecureConfStore

/// The node's PBKDF2 salt, in one place: the file (`SaltFile`), its bootstrap from the
/// cluster's peers, its binding to the store (the fingerprint recorded with the data), the
/// salt a peer offers, and whether this node may serve (its salt is the cluster's).
public struct NodeSalt: Sendable {
    public let bytes: [UInt8]
    public let fingerprint: String

    public static var length: Int { SaltFile.length }

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.fingerprint = SaltFile.fingerprint(bytes)
    }

    /// Before the store opens: a cluster node with no salt file and no data gets the
    /// cluster's salt from its peers and writes it; if nobody has one and this node sorts
    /// first, it returns and `open` creates the salt. Never runs over existing data.
    public static func bootstrap(
        path: String,
        hasData: () async throws -> Bool,
        settings: ClusterSettings,
        transport: any PeerTransporting,
        logger: Logger
    ) async throws {
        guard !FileManager.default.fileExists(atPath: path), !(try await hasData()) else { return }
        let outcome: SaltBootstrap.Outcome
        do {
            outcome = try await SaltBootstrap.obtain(settings: settings, transport: transport, saltLength: SaltFile.length, logger: logger)
        } catch {
            throw SaltError(description: "\(error)")
        }
        if case let .fetched(salt, peer) = outcome {
            try SaltFile.create(at: path, salt: salt)
            logger.notice("fetched the cluster's salt", metadata: ["peer": "\(peer)", "salt_fingerprint": "\(SaltFile.fingerprint(salt))"])
        }
    }

    /// The salt of `store`'s data: read from `path`, or created there over a store that holds
    /// nothing. Refuses (never minting a salt over existing data, never serving data
    /// encrypted under another salt) when the file is missing but the store holds data or
    /// a recorded fingerprint, when the file does not match that fingerprint, when it is
    /// too short, or when the store was written with other PBKDF2 iterations. The first use
    /// records the fingerprint and the key-derivation parameters with the data.
    public static func open(path: String, store: any MetadataStorage, databasePath: String, kdfIterations: Int, logger: Logger) throws -> NodeSalt {
        let recorded = try store.metadata("salt_fingerprint")
        let hasData = try store.hasData()
        if let recordedIterations = try store.metadata("kdf_iterations"), recordedIterations != String(kdfIterations) {
            throw SaltError(
                description:
                    "the database \(databasePath) was written with PBKDF2 iterations \(recordedIterations), but OSC_KDF_ITERATIONS is \(kdfIterations); set it back to \(recordedIterations)"
            )
        }
        let salt: [UInt8]
        if let existing = try SaltFile.read(at: path) {
            salt = existing
        } else if recorded != nil || hasData {
            throw SaltError(
                description:
                    "salt file \(path) is missing, but the database \(databasePath) holds data encrypted with salt \(recorded ?? "(unrecorded)"); restore the salt file from backup. SecureConf never creates a new salt over existing data, because every stored secret would become unreadable"
            )
        } else {
            try SaltFile.create(at: path)
            guard let created = try SaltFile.read(at: path) else { throw SaltError(description: "salt file \(path) vanished after creation") }
            salt = created
            logger.notice("created a new salt", metadata: ["salt_file": "\(path)", "salt_fingerprint": "\(SaltFile.fingerprint(created))"])
        }
        let opened = NodeSalt(salt)
        if let recorded, recorded != opened.fingerprint {
            throw SaltError(
                description:
                    "salt file \(path) does not match the database \(databasePath) (salt fingerprint \(opened.fingerprint), database expects \(recorded)); the file is truncated, replaced or from another node. Restore the original salt file from backup"
            )
        }
        if salt.count < 16 {
            throw SaltError(
                description: "salt file \(path) holds only \(salt.count) bytes; a salt is \(SaltFile.length) random bytes. Restore it from backup"
            )
        }
        if recorded == nil {
            // Claimed, not set: a node that started on the same shared database a moment
            // earlier with another salt has recorded its own, and this one must not serve.
            let claimed = try store.claimMetadata("salt_fingerprint", opened.fingerprint)
            if claimed != opened.fingerprint {
                throw SaltError(
                    description:
                        "the database \(databasePath) was claimed by another node with salt \(claimed) while this node started with salt \(opened.fingerprint) (\(path)); give every node on one database the same salt file: copy the first node's"
                )
            }
            try store.setMetadata("kdf_algorithm", "pbkdf2-hmac-sha256")
            try store.setMetadata("kdf_iterations", String(kdfIterations))
        }
        return opened
    }

    /// A salt a peer offers (`POST /cluster/salt`): accepted only if it is this one; a salt is never replaced.
    public func accept(_ offered: [UInt8]) throws(ServiceError) {
        guard offered.count == SaltFile.length else {
            throw ServiceError.badRequest("Invalid salt size: \(offered.count) bytes (expected \(SaltFile.length))")
        }
        guard OpenSSL.constantTimeEquals(offered, bytes) else {
            throw ServiceError(.saltConflict, "Salt file already exists and differs from received salt; a salt is never replaced")
        }
    }

    /// 503 while this node's salt differs from the one its peers hold (it must not serve data then).
    public static func ensureServing(_ cluster: ClusterCoordinator?) throws(ServiceError) {
        if let cluster, case let (false, reason) = cluster.saltIsConsistent {
            throw ServiceError(.saltMismatch, reason ?? "salt differs from the cluster")
        }
        if let cluster, cluster.isRefilling {
            throw ServiceError(
                .refilling,
                "This node was out of touch with the cluster longer than OSC_TOMBSTONE_HORIZON and is refilling from its peers; retry, or use another node",
                retryAfter: 2
            )
        }
    }
}
