import Foundation

/// What each kind of write makes of the current entry, whatever the engine: the checks it
/// makes and the revision it writes, with its change to the live-entry count. Every storage
/// implementation (SQLite's `ConfigStore`, PostgreSQL's) runs these inside its transaction,
/// against the current row it read there.
public struct WritePlan: Sendable {
    public var origin: String
    public var clock: HybridLogicalClock

    public init(origin: String, clock: HybridLogicalClock) {
        self.origin = origin
        self.clock = clock
    }

    public static func nowMicros() -> Int64 { Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()) }

    /// The stamp of a local write superseding `previous`; 503-class `unavailable` when that
    /// revision is stamped beyond this node's clock bound (a wall clock stepped back).
    public func stamp(after previous: Int64?, environment: String, key: String) throws -> Int64 {
        guard let stamp = clock.boundedStamp(after: previous) else {
            let ahead = Double(HybridLogicalClock.millis(of: previous ?? 0) - clock.wallMillis()) / 1000
            throw StoreError.unavailable(
                String(
                    format:
                        "configuration '%@' in environment '%@' was last written with a stamp %.0f s ahead of this node's clock; writes to it wait until the clock catches up (check NTP)",
                    String(key.prefix(100)),
                    String(TenantNames.split(environment).environment.prefix(100)),
                    ahead
                )
            )
        }
        return stamp
    }

    /// A create: refused over a live entry; a tombstoned key may be created again.
    public func create(
        environment: String,
        key: String,
        current: ConfigEntry?,
        category: String?,
        ciphertext: String,
        actor: String?
    ) throws -> (Revision, delta: Int) {
        if let current, !current.deleted { throw StoreError.alreadyExists(environment: environment, key: key) }
        let now = Self.nowMicros()
        let revision = Revision(
            environment: environment,
            key: key,
            category: category,
            ciphertext: ciphertext,
            hlc: try stamp(after: current?.hlc, environment: environment, key: key),
            origin: origin,
            deleted: false,
            createdAt: now,
            updatedAt: now,
            actor: actor
        )
        return (revision, 1)
    }

    /// The live entry a change to it needs, whose value `authenticates` accepts.
    public static func live(
        _ current: ConfigEntry?,
        environment: String,
        key: String,
        authenticates: (String) -> Bool
    ) throws -> ConfigEntry {
        guard let current, !current.deleted else { throw StoreError.notFound(environment: environment, key: key) }
        guard authenticates(current.ciphertext) else { throw StoreError.wrongKey }
        return current
    }

    /// An update of a live entry; a nil category keeps the current one.
    public func update(
        environment: String,
        key: String,
        current: ConfigEntry?,
        category: String?,
        ciphertext: String,
        actor: String?,
        authenticates: (String) -> Bool
    ) throws -> (Revision, delta: Int) {
        let current = try Self.live(current, environment: environment, key: key, authenticates: authenticates)
        return (
            try put(environment: environment, key: key, over: current, category: category ?? current.category, ciphertext: ciphertext, actor: actor),
            0
        )
    }

    /// A delete of a live entry: a tombstone.
    public func delete(
        environment: String,
        key: String,
        current: ConfigEntry?,
        actor: String?,
        authenticates: (String) -> Bool
    ) throws -> (Revision, delta: Int) {
        let current = try Self.live(current, environment: environment, key: key, authenticates: authenticates)
        return (try tombstone(environment: environment, over: current, actor: actor), -1)
    }

    /// The tombstone that deletes `current`.
    func tombstone(environment: String, over current: ConfigEntry, actor: String?) throws -> Revision {
        Revision(
            environment: environment,
            key: current.key,
            category: current.category,
            ciphertext: "",
            hlc: try stamp(after: current.hlc, environment: environment, key: current.key),
            origin: origin,
            deleted: true,
            createdAt: current.createdAt,
            updatedAt: max(Self.nowMicros(), current.updatedAt),
            actor: actor
        )
    }

    /// A value written back from history: a deleted key comes back; a live one must be one
    /// `authenticates` accepts.
    public func rollback(
        environment: String,
        key: String,
        current: ConfigEntry?,
        category: String?,
        ciphertext: String,
        actor: String?,
        authenticates: (String) -> Bool
    ) throws -> (Revision, delta: Int) {
        guard let current else { throw StoreError.notFound(environment: environment, key: key) }
        if !current.deleted, !authenticates(current.ciphertext) { throw StoreError.wrongKey }
        return (
            try put(environment: environment, key: key, over: current, category: category, ciphertext: ciphertext, actor: actor),
            current.deleted ? 1 : 0
        )
    }

    /// A new value over `current` (live or deleted), optionally purging what it replaces.
    func put(
        environment: String,
        key: String,
        over current: ConfigEntry,
        category: String?,
        ciphertext: String,
        actor: String?,
        purges: Bool = false
    ) throws -> Revision {
        let now = Self.nowMicros()
        return Revision(
            environment: environment,
            key: key,
            category: category,
            ciphertext: ciphertext,
            hlc: try stamp(after: current.hlc, environment: environment, key: key),
            origin: origin,
            deleted: false,
            createdAt: current.deleted ? now : current.createdAt,
            updatedAt: max(now, current.updatedAt),
            actor: actor,
            purgesThrough: purges ? RevisionStamp(hlc: current.hlc, origin: current.origin) : nil
        )
    }

    /// One key of an environment restore: refused (`conflict`, nothing restored) when the key
    /// is no longer at the revision the plan saw.
    public func restore(environment: String, _ change: PlannedRestore, current: ConfigEntry?, actor: String?) throws -> (Revision, delta: Int) {
        guard let current, current.hlc == change.expectedHLC, current.origin == change.expectedOrigin else {
            throw StoreError.conflict(
                "Configuration '\(change.key)' in environment '\(TenantNames.split(environment).environment)' changed during the restore; nothing was restored, retry"
            )
        }
        switch change.change {
        case let .put(category, ciphertext):
            let revision = try put(
                environment: environment,
                key: change.key,
                over: current,
                category: category,
                ciphertext: ciphertext,
                actor: actor,
                purges: change.purgesOlder
            )
            return (revision, current.deleted ? 1 : 0)
        case .delete:
            return (try tombstone(environment: environment, over: current, actor: actor), current.deleted ? 0 : -1)
        }
    }
}

extension StoredChange {
    /// The change a revision made, from whether the key was deleted just before it (nil: it
    /// did not exist); nil for a tombstone over nothing live, and for users and tokens, which
    /// are no configuration (never a change event). The tenant leaves split from the name.
    public static func classify(seq: Int64, _ stored: Revision, deletedBefore before: Bool?) -> StoredChange? {
        var revision = stored
        if revision.environment == EntryNames.identityEnvironment { return nil }
        if revision.deleted, before != false { return nil }
        (revision.tenant, revision.environment) = TenantNames.split(revision.environment)
        let kind: ChangeKind =
            if revision.deleted {
                .deleted
            } else if let before, !before {
                .updated
            } else {
                .created
            }
        return StoredChange(seq: seq, kind: kind, revision: revision)
    }
}

extension TenantNames {
    /// A tenant's name must be one: anything else is in no store.
    public static func checkLocal(_ tenant: String) throws {
        if tenant != Revision.defaultTenant, problem(tenant) != nil { throw StoreError.unknownTenant(tenant) }
    }

    /// The stored environment of a name (its tenant folded in).
    public static func stored(_ name: EntryName) throws -> String {
        try checkLocal(name.tenant)
        return stored(tenant: name.tenant, environment: name.environment)
    }
}
