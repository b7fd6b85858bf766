import Foundation
import GRDB

/// The newest revision of one (environment, key): what reads and lists return.
public struct ConfigEntry: Sendable, Equatable, FetchableRecord {
    public var id: Int64
    /// The tenant and environment, split from the stored name (`TenantNames`).
    public var tenant: String = Revision.defaultTenant
    public var environment: String
    public var key: String
    public var category: String?
    public var ciphertext: String
    public var hlc: Int64
    public var origin: String
    public var deleted: Bool
    /// Microseconds since 1970.
    public var createdAt: Int64
    public var updatedAt: Int64

    /// Columns in `ConfigEntry.columns` order.
    public init(row: Row) {
        id = row[0]
        (tenant, environment) = TenantNames.split(row[1])
        key = row[2]
        category = row[3]
        ciphertext = row[4]
        hlc = row[5]
        origin = row[6]
        deleted = row[7]
        createdAt = row[8]
        updatedAt = row[9]
    }

    /// The `entries` columns: the row id, then a revision's entry columns.
    static let columns = "id, " + Revision.entryColumns

    /// The entry a revision makes current, under the entry's row id.
    public init(_ r: Revision, id: Int64) {
        let (tenant, environment) = TenantNames.split(r.environment)
        self.init(
            id: id,
            tenant: tenant,
            environment: environment,
            key: r.key,
            category: r.category,
            ciphertext: r.ciphertext,
            hlc: r.hlc,
            origin: r.origin,
            deleted: r.deleted,
            createdAt: r.createdAt,
            updatedAt: r.updatedAt
        )
    }
}

/// One write to one key, as kept forever in `revisions` and as shipped between nodes.
public struct Revision: Sendable, Equatable, Codable, FetchableRecord {
    /// Every revision's tenant until tenants exist; carried on the wire and in every hash now
    /// so that tenants need no wire migration later.
    public static let defaultTenant = "default"

    public var tenant: String
    public var environment: String
    public var key: String
    public var category: String?
    /// The Fernet token; empty for a tombstone.
    public var ciphertext: String
    public var hlc: Int64
    public var origin: String
    public var deleted: Bool
    /// Microseconds since 1970, by the origin's wall clock.
    public var createdAt: Int64
    public var updatedAt: Int64
    public var actor: String?
    /// Written by a rekey that purges: the revision it replaced, (hlc, origin). Every
    /// revision of its key up to that one is removed from history on every node that holds
    /// this one (and one that arrives later is pruned on arrival), so a retired user key's
    /// ciphertexts leave the whole cluster; a concurrent write after that bound is kept.
    public var purgesThrough: RevisionStamp?

    enum CodingKeys: String, CodingKey {
        case tenant, environment, key, category, ciphertext, hlc, origin, deleted, actor
        case createdAt = "created_at"
        case updatedAt = "updated_at"
        case purgesThrough = "purges_through"
    }

    public init(
        tenant: String = Revision.defaultTenant,
        environment: String,
        key: String,
        category: String?,
        ciphertext: String,
        hlc: Int64,
        origin: String,
        deleted: Bool,
        createdAt: Int64,
        updatedAt: Int64,
        actor: String? = nil,
        purgesThrough: RevisionStamp? = nil
    ) {
        self.tenant = tenant
        self.environment = environment
        self.key = key
        self.category = category
        self.ciphertext = ciphertext
        self.hlc = hlc
        self.origin = origin
        self.deleted = deleted
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.actor = actor
        self.purgesThrough = purgesThrough
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        tenant = try c.decodeIfPresent(String.self, forKey: .tenant) ?? Self.defaultTenant
        environment = try c.decode(String.self, forKey: .environment)
        key = try c.decode(String.self, forKey: .key)
        category = try c.decodeIfPresent(String.self, forKey: .category)
        ciphertext = try c.decode(String.self, forKey: .ciphertext)
        hlc = try c.decode(Int64.self, forKey: .hlc)
        origin = try c.decode(String.self, forKey: .origin)
        deleted = try c.decode(Bool.self, forKey: .deleted)
        createdAt = try c.decode(Int64.self, forKey: .createdAt)
        updatedAt = try c.decode(Int64.self, forKey: .updatedAt)
        actor = try c.decodeIfPresent(String.self, forKey: .actor)
        purgesThrough = try c.decodeIfPresent(RevisionStamp.self, forKey: .purgesThrough)
    }

    /// `purges_through` only when set: every other revision travels as it always has.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(tenant, forKey: .tenant)
        try c.encode(environment, forKey: .environment)
        try c.encode(key, forKey: .key)
        try c.encodeIfPresent(category, forKey: .category)
        try c.encode(ciphertext, forKey: .ciphertext)
        try c.encode(hlc, forKey: .hlc)
        try c.encode(origin, forKey: .origin)
        try c.encode(deleted, forKey: .deleted)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
        try c.encodeIfPresent(actor, forKey: .actor)
        try c.encodeIfPresent(purgesThrough, forKey: .purgesThrough)
    }

    /// About how many bytes the revision takes in a replication message.
    public var wireSize: Int {
        ciphertext.utf8.count + key.utf8.count + environment.utf8.count + (category?.utf8.count ?? 0) + 256
    }

    /// The longest prefix of `items` whose revisions fit in `maxBytes` (at least one item, so a
    /// revision larger than the budget travels alone).
    public static func prefix<S: Sequence>(_ items: S, maxBytes: Int, revision: (S.Element) -> Revision) -> [S.Element] {
        var out: [S.Element] = []
        var bytes = 0
        for item in items {
            let size = revision(item).wireSize
            if !out.isEmpty && bytes + size > maxBytes { break }
            out.append(item)
            bytes += size
        }
        return out
    }

    /// Total order of revisions of a key, the same on every node: (hlc, origin).
    public func supersedes(hlc otherHLC: Int64, origin otherOrigin: String) -> Bool {
        (hlc, origin) > (otherHLC, otherOrigin)
    }
}

/// The one record model of a revision row: its columns, listed once. `revisions` and
/// `set_aside_revisions` hold all of them, `entries` the entry columns (all but `actor` and
/// the purge bound), and every query and insert is written from these lists.
extension Revision {
    public enum Columns: String, CaseIterable, Sendable {
        case environment, key, category, ciphertext, hlc, origin, deleted
        case createdAt = "created_at"
        case updatedAt = "updated_at"
        case actor
        case purgesThroughHLC = "purges_through_hlc"
        case purgesThroughOrigin = "purges_through_origin"

        /// Whether `entries` has the column too.
        var inEntries: Bool { self != .actor && self != .purgesThroughHLC && self != .purgesThroughOrigin }
    }

    /// `environment, key, …, actor, purges_through_hlc, purges_through_origin`: a revision's columns, in `Columns` order.
    public static let columns = Columns.allCases.map(\.rawValue).joined(separator: ", ")
    /// The columns an entry shares with its revision, in `Columns` order.
    public static let entryColumns = Columns.allCases.filter(\.inEntries).map(\.rawValue).joined(separator: ", ")

    /// The values of `columns`, in order.
    var columnValues: [(any DatabaseValueConvertible)?] {
        [environment, key, category, ciphertext, hlc, origin, deleted, createdAt, updatedAt, actor, purgesThrough?.hlc, purgesThrough?.origin]
    }
    /// The values of `entryColumns`, in order.
    var entryColumnValues: [(any DatabaseValueConvertible)?] {
        zip(Columns.allCases, columnValues).filter { $0.0.inEntries }.map(\.1)
    }

    /// `INSERT INTO table(<columns>, extra…) VALUES (?, …)`.
    static func insertSQL(_ table: String, entry: Bool = false, extra: [String] = [], or verb: String = "INSERT") -> String {
        let names = (entry ? entryColumns : columns) + extra.map { ", " + $0 }.joined()
        let count = (entry ? Columns.allCases.filter(\.inEntries).count : Columns.allCases.count) + extra.count
        return "\(verb) INTO \(table)(\(names)) VALUES (\(Array(repeating: "?", count: count).joined(separator: ", ")))"
    }

    /// From a row holding the revision columns, by name.
    public init(row: Row) {
        self.init(
            environment: row[Columns.environment.rawValue],
            key: row[Columns.key.rawValue],
            category: row[Columns.category.rawValue],
            ciphertext: row[Columns.ciphertext.rawValue],
            hlc: row[Columns.hlc.rawValue],
            origin: row[Columns.origin.rawValue],
            deleted: row[Columns.deleted.rawValue],
            createdAt: row[Columns.createdAt.rawValue],
            updatedAt: row[Columns.updatedAt.rawValue],
            actor: row[Columns.actor.rawValue],
            purgesThrough: RevisionStamp(hlc: row[Columns.purgesThroughHLC.rawValue], origin: row[Columns.purgesThroughOrigin.rawValue])
        )
    }
}

/// A revision its origin pruned from history (`OSC_MAX_VERSIONS`, a purge), by identity:
/// what a peer that never received it needs to number the key's versions alike.
public struct PrunedMarker: Sendable, Equatable, Codable {
    public var environment: String
    public var key: String
    public var hlc: Int64
    public var origin: String
    public var deleted: Bool

    public init(environment: String, key: String, hlc: Int64, origin: String, deleted: Bool) {
        self.environment = environment
        self.key = key
        self.hlc = hlc
        self.origin = origin
        self.deleted = deleted
    }
}

/// A revision's place in its key's order, (hlc, origin).
public struct RevisionStamp: Sendable, Equatable, Codable {
    public var hlc: Int64
    public var origin: String

    public init(hlc: Int64, origin: String) {
        self.hlc = hlc
        self.origin = origin
    }

    /// Both columns, or nil when either is NULL.
    init?(hlc: Int64?, origin: String?) {
        guard let hlc, let origin else { return nil }
        self.init(hlc: hlc, origin: origin)
    }
}

/// What a store operation refused, mapped to HTTP by the server.
public enum StoreError: Error, Equatable, CustomStringConvertible {
    case alreadyExists(environment: String, key: String)
    case notFound(environment: String, key: String)
    /// The caller's key does not authenticate the stored value.
    case wrongKey
    case unavailable(String)
    /// No version `version` in the key's history.
    case versionNotFound(environment: String, key: String, version: Int)
    /// Version `version` was dropped by `OSC_MAX_VERSIONS`.
    case versionPruned(environment: String, key: String, version: Int)
    /// Version `version` is a delete (a tombstone): it has no value.
    case versionIsDelete(environment: String, key: String, version: Int)
    /// What a multi-key write planned against changed before it committed.
    case conflict(String)
    /// A tenant this store does not hold.
    case unknownTenant(String)
    /// The key was deleted and its history collected (`OSC_TOMBSTONE_HORIZON`).
    case collected(environment: String, key: String)

    public var description: String {
        switch self {
        case let .versionNotFound(env, key, n):
            "Version \(n) of configuration '\(key)' not found in environment '\(TenantNames.split(env).environment)'"
        case let .versionPruned(env, key, n):
            "Version \(n) of configuration '\(key)' in environment '\(TenantNames.split(env).environment)' was pruned (OSC_MAX_VERSIONS, or a rekey that purged the old values)"
        case let .versionIsDelete(env, key, n):
            "version \(n) is a delete: configuration '\(key)' in environment '\(TenantNames.split(env).environment)' has no value at that version"
        case let .conflict(why): why
        case let .alreadyExists(env, key): "Configuration with key '\(key)' already exists in environment '\(TenantNames.split(env).environment)'"
        case let .notFound(env, key): "Configuration with key '\(key)' not found in environment '\(TenantNames.split(env).environment)'"
        case .wrongKey: "Invalid user key: unable to decrypt configuration"
        case let .unavailable(why): "storage unavailable: \(why)"
        case let .unknownTenant(tenant): "Tenant '\(tenant)' not found"
        case let .collected(env, key):
            "Configuration '\(key)' in environment '\(TenantNames.split(env).environment)' was deleted and its history collected (OSC_TOMBSTONE_HORIZON)"
        }
    }
}
