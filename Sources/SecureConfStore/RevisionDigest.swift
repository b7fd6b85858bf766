import Foundation
import GRDB
import SecureConfCrypto

/// A revision's identity across the cluster: (environment, key, hlc, origin).
public struct RevisionID: Hashable, Sendable, Codable {
    public var environment: String
    public var key: String
    public var hlc: Int64
    public var origin: String

    public init(environment: String, key: String, hlc: Int64, origin: String) {
        self.environment = environment
        self.key = key
        self.hlc = hlc
        self.origin = origin
    }
}

extension Revision {
    public var id: RevisionID { RevisionID(environment: environment, key: key, hlc: hlc, origin: origin) }
}

/// Bucketed digests of the revision set, for anti-entropy: each (environment, key) falls in
/// one of 256 buckets; a bucket's hash is the XOR of SHA-256 over each of its revisions, so
/// it is independent of arrival order and updated incrementally. Two nodes compare the 256
/// hashes and exchange only the revisions of the buckets that differ.
public enum RevisionDigest {
    public static let bucketCount = 256

    public static func bucket(environment: String, key: String) -> Int {
        Int(OpenSSL.sha256(Array(environment.utf8) + [0] + Array(key.utf8))[0])
    }

    static func hash(_ r: Revision) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(r.environment.utf8.count + r.key.utf8.count + r.origin.utf8.count + r.ciphertext.utf8.count + 48)
        bytes += Array(r.environment.utf8); bytes.append(0)
        bytes += Array(r.key.utf8); bytes.append(0)
        bytes += Array(String(r.hlc).utf8); bytes.append(0)
        bytes += Array(r.origin.utf8); bytes.append(0)
        bytes.append(r.deleted ? 1 : 0); bytes.append(0)
        bytes += Array((r.category ?? "").utf8); bytes.append(r.category == nil ? 1 : 0)
        bytes += Array(r.ciphertext.utf8)
        return OpenSSL.sha256(bytes)
    }

    static func add(_ r: Revision, bucket: Int, db: Database) throws {
        try combine(r, bucket: bucket, countDelta: 1, db: db)
    }

    /// XOR is its own inverse: removing a revision folds its hash in again.
    static func remove(_ r: Revision, bucket: Int, db: Database) throws {
        try combine(r, bucket: bucket, countDelta: -1, db: db)
    }

    private static func combine(_ r: Revision, bucket: Int, countDelta: Int, db: Database) throws {
        let h = hash(r)
        let current = try Data.fetchOne(db.cachedStatement(sql: "SELECT hash FROM digest_buckets WHERE bucket = ?"), arguments: [bucket])
        var combined = current.map { [UInt8]($0) } ?? [UInt8](repeating: 0, count: 32)
        for i in 0..<32 { combined[i] ^= h[i] }
        try db.cachedStatement(sql: """
            INSERT INTO digest_buckets(bucket, hash, count) VALUES (?, ?, ?)
            ON CONFLICT(bucket) DO UPDATE SET hash = excluded.hash, count = count + excluded.count
            """).execute(arguments: [bucket, Data(combined), countDelta])
    }

    /// The root digest: SHA-256 over the 256 bucket hashes in order.
    public static func root(_ buckets: [[UInt8]]) -> String {
        hex(OpenSSL.sha256(buckets.flatMap { $0 }))
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}
