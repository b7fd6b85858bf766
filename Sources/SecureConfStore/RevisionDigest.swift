import Foundation
import GRDB
import SecureConfCrypto

/// A revision's identity across the cluster, (tenant, environment, key, hlc, origin), with
/// the hash of its content: two revisions that share an identity but differ in content are
/// told apart (and resolved, `ConfigStore.apply`) instead of being taken for one.
public struct RevisionID: Hashable, Sendable, Codable {
    public var tenant: String
    public var environment: String
    public var key: String
    public var hlc: Int64
    public var origin: String
    /// Hex SHA-256 of the revision's content (`RevisionDigest.contentHash`).
    public var hash: String

    public init(tenant: String = Revision.defaultTenant, environment: String, key: String, hlc: Int64, origin: String, hash: String) {
        self.tenant = tenant
        self.environment = environment
        self.key = key
        self.hlc = hlc
        self.origin = origin
        self.hash = hash
    }

    /// The identity without the content hash.
    public var identity: RevisionIdentity { RevisionIdentity(tenant: tenant, environment: environment, key: key, hlc: hlc, origin: origin) }
}

/// Where a revision sits in a key's history: (tenant, environment, key, hlc, origin).
public struct RevisionIdentity: Hashable, Sendable {
    public var tenant: String
    public var environment: String
    public var key: String
    public var hlc: Int64
    public var origin: String
}

extension Revision {
    public var id: RevisionID {
        RevisionID(
            tenant: tenant,
            environment: environment,
            key: key,
            hlc: hlc,
            origin: origin,
            hash: RevisionDigest.hex(RevisionDigest.contentHash(self))
        )
    }
}

/// Bucketed digests of the revision set, for anti-entropy: each (tenant, environment, key)
/// falls in one of 256 buckets; a bucket's hash is the XOR of the content hashes of its
/// revisions, so it is independent of arrival order and updated incrementally. Two nodes
/// compare the 256 hashes and exchange only the revisions of the buckets that differ.
public enum RevisionDigest {
    public static let bucketCount = 256

    public static func bucket(tenant: String = Revision.defaultTenant, environment: String, key: String) -> Int {
        Int(OpenSSL.sha256(Array(tenant.utf8) + [0] + Array(environment.utf8) + [0] + Array(key.utf8))[0])
    }

    /// SHA-256 over every field of the revision, each length-prefixed: the same bytes on
    /// every node, and different whenever any field differs.
    public static func contentHash(_ r: Revision) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(
            r.tenant.utf8.count + r.environment.utf8.count + r.key.utf8.count + r.origin.utf8.count
                + r.ciphertext.utf8.count + (r.category?.utf8.count ?? 0) + (r.actor?.utf8.count ?? 0) + 96
        )
        func field(_ s: String?) {
            guard let s else { bytes.append(0); return }
            bytes.append(1)
            integer(Int64(s.utf8.count))
            bytes += s.utf8
        }
        func integer(_ n: Int64) {
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: n >> Int64(shift))) }
        }
        bytes += Array("secureconf revision v2".utf8)
        field(r.tenant); field(r.environment); field(r.key)
        integer(r.hlc); field(r.origin)
        bytes.append(r.deleted ? 1 : 0)
        field(r.category); field(r.ciphertext)
        integer(r.createdAt); integer(r.updatedAt)
        field(r.actor)
        // Only a purging revision says so (every other revision's hash is as it always was).
        if let bound = r.purgesThrough {
            bytes += Array("purges through".utf8)
            integer(bound.hlc); field(bound.origin)
        }
        return OpenSSL.sha256(bytes)
    }

    static func add(hash: [UInt8], bucket: Int, db: Database) throws {
        try combine(hash, bucket: bucket, countDelta: 1, db: db)
    }

    /// XOR is its own inverse: removing a revision folds its hash in again.
    static func remove(hash: [UInt8], bucket: Int, db: Database) throws {
        try combine(hash, bucket: bucket, countDelta: -1, db: db)
    }

    private static func combine(_ h: [UInt8], bucket: Int, countDelta: Int, db: Database) throws {
        let current = try Data.fetchOne(db.cachedStatement(sql: "SELECT hash FROM digest_buckets WHERE bucket = ?"), arguments: [bucket])
        var combined = current.map { [UInt8]($0) } ?? [UInt8](repeating: 0, count: 32)
        if combined.count != 32 { combined = [UInt8](repeating: 0, count: 32) }
        for i in 0..<32 { combined[i] ^= h[i] }
        try db.cachedStatement(
            sql: """
                INSERT INTO digest_buckets(bucket, hash, count) VALUES (?, ?, ?)
                ON CONFLICT(bucket) DO UPDATE SET hash = excluded.hash, count = count + excluded.count
                """
        ).execute(arguments: [bucket, Data(combined), countDelta])
    }

    /// Recomputes every bucket from the revisions table (migrations).
    static func rebuild(db: Database) throws {
        try db.execute(sql: "DELETE FROM digest_buckets")
        // Migrations older than a column run before it exists (a revision without it reads as unset).
        let present = Set(try db.columns(in: "revisions").map(\.name))
        let columns = Revision.Columns.allCases.map(\.rawValue).filter(present.contains).joined(separator: ", ")
        let rows = try Row.fetchCursor(db, sql: "SELECT seq, \(columns) FROM revisions")
        while let row = try rows.next() {
            let r = Revision(row: row)
            let hash = contentHash(r)
            let bucket = bucket(tenant: r.tenant, environment: r.environment, key: r.key)
            try db.execute(
                sql: "UPDATE revisions SET bucket = ?, content_hash = ? WHERE seq = ?",
                arguments: [bucket, Data(hash), row["seq"] as Int64]
            )
            try add(hash: hash, bucket: bucket, db: db)
        }
    }

    /// The root digest: SHA-256 over the 256 bucket hashes in order.
    public static func root(_ buckets: [[UInt8]]) -> String {
        hex(OpenSSL.sha256(buckets.flatMap { $0 }))
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}
