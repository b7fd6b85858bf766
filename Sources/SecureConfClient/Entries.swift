import Foundation
import SecureConfJSON

/// One configuration entry as a client reads it: the value is the JSON the writer stored.
public struct Entry: Sendable, Equatable {
    public var key: String
    public var environment: String
    public var category: String?
    public var value: JSONValue

    public init(key: String, environment: String, category: String?, value: JSONValue) {
        self.key = key
        self.environment = environment
        self.category = category
        self.value = value
    }
}

extension SecureConfClient {
    /// Every entry of the client's environment (optionally of one category) that the user key
    /// opens, in the node's order (creation order).
    public func entries(category: String? = nil) async throws(ClientError) -> [Entry] {
        let data = try await send(.list(category: category))
        guard let parsed = try? JSONParser.parse(Array(data), maxDepth: 512), case .array(let records) = parsed else {
            throw ClientError(.unreachable, "unexpected reply to GET /configs")
        }
        return try records.map { record throws(ClientError) in try Entry(record, "GET /configs") }
    }

    /// One entry (`at`: as it was at that RFC 3339 moment).
    public func entry(_ key: String, at: String? = nil) async throws(ClientError) -> Entry {
        try Entry(try Self.object(try await send(.read(key: key, at: at)), "GET /configs/\(key)"), "GET /configs/\(key)")
    }

    /// Creates `key` (400 when it exists, as OpenSecureConf answers) and returns the stored entry.
    @discardableResult
    public func create(_ key: String, value: JSONValue, category: String? = nil) async throws(ClientError) -> Entry {
        try Entry(try Self.object(try await send(.create(key: key, value: value, category: category)), "POST /configs"), "POST /configs")
    }

    /// Writes a new version of `key` (404 when there is none; category nil keeps the current one).
    @discardableResult
    public func update(_ key: String, value: JSONValue, category: String? = nil) async throws(ClientError) -> Entry {
        let what = "PUT /configs/\(key)"
        return try Entry(try Self.object(try await send(.update(key: key, value: value, category: category)), what), what)
    }

    /// Deletes `key` (its history stays; `rollback` brings it back).
    public func delete(_ key: String) async throws(ClientError) {
        _ = try await send(.delete(key: key))
    }

    /// An encrypted backup of the environment (optionally one category), OpenSecureConf 3.1's format.
    public func backup(password: String, category: String? = nil) async throws(ClientError) -> Backup {
        let reply = try Self.object(try await send(.backup(password: password, category: category)), "POST /backup")
        guard let data = reply["backup_data"]?.stringValue, let total = reply["total_keys"]?.integerValue else {
            throw ClientError(.unreachable, "unexpected reply to POST /backup")
        }
        return Backup(data: data, totalKeys: total, id: reply["backup_id"]?.stringValue, timestamp: reply["backup_timestamp"]?.stringValue)
    }

    /// Writes a backup's entries under the client's user key; existing keys are kept unless `overwrite`.
    public func importBackup(_ backup: String, password: String, overwrite: Bool = false) async throws(ClientError) -> ImportReport {
        let reply = try Self.object(try await send(.importBackup(backupData: backup, password: password, overwrite: overwrite)), "POST /import")
        guard let imported = reply["imported"]?.integerValue, let skipped = reply["skipped"]?.integerValue else {
            throw ClientError(.unreachable, "unexpected reply to POST /import")
        }
        var failed: [String] = []
        if case .array(let items)? = reply["failed_keys"] { failed = items.compactMap { $0["key"]?.stringValue } }
        return ImportReport(imported: imported, skipped: skipped, failedKeys: failed)
    }

    static func object(_ data: Data, _ what: String) throws(ClientError) -> JSONValue {
        guard let parsed = try? JSONParser.parse(Array(data), maxDepth: 512), case .object = parsed else {
            throw ClientError(.unreachable, "unexpected reply to \(what)")
        }
        return parsed
    }
}

/// What `POST /backup` made: `data` is what `importBackup` takes.
public struct Backup: Sendable, Equatable {
    public var data: String
    public var totalKeys: Int
    public var id: String?
    public var timestamp: String?

    public init(data: String, totalKeys: Int, id: String? = nil, timestamp: String? = nil) {
        (self.data, self.totalKeys, self.id, self.timestamp) = (data, totalKeys, id, timestamp)
    }
}

/// What `POST /import` did.
public struct ImportReport: Sendable, Equatable {
    public var imported: Int
    public var skipped: Int
    /// The keys that could not be written.
    public var failedKeys: [String]

    public init(imported: Int, skipped: Int, failedKeys: [String]) {
        (self.imported, self.skipped, self.failedKeys) = (imported, skipped, failedKeys)
    }
}

extension Entry {
    init(_ record: JSONValue, _ what: String) throws(ClientError) {
        guard let key = record["key"]?.stringValue, let environment = record["environment"]?.stringValue, let value = record["value"] else {
            throw ClientError(.unreachable, "unexpected record in the reply to \(what)")
        }
        self.init(key: key, environment: environment, category: record["category"]?.stringValue, value: value)
    }
}

extension JSONValue {
    /// The number as an Int, when it is a whole number that fits.
    var integerValue: Int? {
        if case .number(let text) = self { return Int(text) }
        return nil
    }
}
