import Foundation
import SecureConfCrypto
import SecureConfJSON

/// OpenSecureConf 3.1's backup container, byte for byte: `backup_data` is standard base64 of
/// a 32-byte random salt followed by a Fernet token (as ASCII) of the backup document's JSON
/// (Python `json.dumps` style); the token's key is PBKDF2-HMAC-SHA256 of the backup password
/// under that salt, 480,000 iterations, 32 bytes (`server/utils/backup.py` there).
public enum OSCBackup {
    public static let iterations: UInt32 = 480_000
    public static let saltLength = 32
    /// The document version OpenSecureConf 3.1 writes.
    public static let version = "2.2.0"

    /// `backup_data` for `document` sealed under `key` (derived from the password and `salt`).
    public static func seal(_ document: [UInt8], salt: [UInt8], key: DerivedKey) -> String {
        let token = Fernet.encrypt(document, key: key)
        return Data(salt + Array(token.utf8)).base64EncodedString()
    }

    /// The salt and token of `backup_data`; 400 when it is not base64 or too short.
    public static func split(_ backupData: String) throws(ServiceError) -> (salt: [UInt8], token: String) {
        let trimmed = backupData.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let blob = Data(base64Encoded: trimmed, options: .ignoreUnknownCharacters).map(Array.init) else {
            throw ServiceError.badRequest("Invalid backup data: not base64")
        }
        guard blob.count > saltLength else { throw ServiceError.badRequest("Invalid backup data: too short") }
        guard let token = String(bytes: blob[saltLength...], encoding: .ascii) else {
            throw ServiceError.badRequest("Invalid backup data: the token is not ASCII")
        }
        return (Array(blob[..<saltLength]), token)
    }

    /// The backup document's configurations; 400 when the document is not one.
    public static func configurations(_ document: [UInt8]) throws(ServiceError) -> (id: String?, timestamp: String?, entries: [JSONValue]) {
        guard case .object(let members)? = try? JSONParser.parse(document, maxDepth: 512) else {
            throw ServiceError.badRequest("Invalid backup format")
        }
        func member(_ name: String) -> JSONValue? { members.last { $0.0 == name }?.1 }
        guard case .array(let entries)? = member("configurations") else { throw ServiceError.badRequest("Invalid backup format") }
        return (member("backup_id")?.stringValue, member("backup_timestamp")?.stringValue, entries)
    }
}

/// What `POST /backup` returns.
public struct BackupResult: Sendable {
    public var backupData: String
    public var totalKeys: Int
    public var backupID: String
    public var timestamp: String
}

/// What `POST /import` did, in OpenSecureConf's terms.
public struct ImportReport: Sendable {
    public var backupID: String
    public var backupTimestamp: String
    public var totalInBackup = 0
    public var imported = 0
    public var skipped = 0
    public var failed: [(key: String, error: String)] = []
}
