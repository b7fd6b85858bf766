import Foundation
import Logging
import SecureConfCluster
import SecureConfCrypto
import SecureConfJSON
import SecureConfStore

/// The one path of every configuration operation, between the HTTP controllers and storage.
///
/// Each operation runs inside `perform`, which does, in this order and for all of them:
/// the authorization step; the operation's own reads; the caller's derived key when the
/// operation needs it (always through the failed-attempt limiter, noted as the actor);
/// decryption and encryption through the one `ValueCipher`; the storage commit carrying
/// its audit record (the store's commit feeds the change events); then, for a committed
/// write, the key-cache proof, replication's wake-up and the write quorum; and last the operation count,
/// once, as what the client receives. Controllers parse, call one method, and render.
public final class ConfigService: Sendable {
    public let storage: any ConfigStorage
    public let credentials: CredentialGate
    public let cipher: ValueCipher
    let observer: any OperationObserver
    let authorizer: any Authorizer
    /// The change-event streams fed by this node's commits.
    public let events: ChangeEventHub?
    let cluster: ClusterCoordinator?

    public init(
        storage: any ConfigStorage,
        credentials: CredentialGate,
        cluster: ClusterCoordinator?,
        observer: any OperationObserver,
        maxTokenBytes: Int,
        authorizer: any Authorizer = PolicyAuthorizer(),
        events: ChangeEventHub? = nil
    ) {
        self.storage = storage
        self.credentials = credentials
        self.cipher = ValueCipher(observer: observer, maxTokenBytes: maxTokenBytes)
        self.observer = observer
        self.authorizer = authorizer
        self.events = events
        self.cluster = cluster
    }

    var federated: Bool { cluster?.settings.mode == .federated }

    // MARK: - The path every operation takes

    /// One operation's state: the caller's key once derived, and what it committed.
    final class Scope {
        let service: ConfigService
        let caller: Caller
        private(set) var key: CachedKey?
        /// Whether a write committed.
        var didCommit = false
        /// Whether the committed write proved the caller's key (a create checks it against nothing).
        var provesKey = true

        init(service: ConfigService, caller: Caller) {
            self.service = service
            self.caller = caller
        }

        /// The caller's derived key (cache or one shared PBKDF2 run, through the limiter), noted as the actor.
        func callerKey() async throws -> CachedKey {
            if let key { return key }
            guard let userKey = caller.userKey else { throw ServiceError.missingUserKey }
            let derived = try await service.credentials.derivedKey(for: userKey, client: caller.client)
            // With a token, the audit actor is its subject (noted by the HTTP layer).
            if caller.principal == nil { caller.audit.actor(service.credentials.actor(for: derived)) }
            key = derived
            return derived
        }

        var actor: String? { key.map(service.credentials.actor(for:)) }

        /// The audit record to commit with a write answered with `status`.
        func auditRecord(status: Int) -> AuditRecordDraft? { caller.audit.recordForWrite(status: status) }

        /// A write committed.
        func committed(provesKey: Bool = true) {
            didCommit = true
            self.provesKey = provesKey
        }
    }

    /// `tenant`: the tenant the operation addresses (nil: the caller's). Another tenant than the
    /// caller's is answered as not found: nothing of one tenant is visible from another.
    func perform<T>(
        _ operation: ConfigOperation,
        _ caller: Caller,
        tenant: String? = nil,
        environment: String?,
        key: String?,
        _ body: (Scope) async throws -> T
    ) async throws -> T {
        let scope = Scope(service: self, caller: caller)
        do {
            if let tenant, tenant != caller.tenant {
                throw ServiceError(.notFound, "Configuration with key '\(key ?? "")' not found in environment '\(environment ?? "")'")
            }
            try authorizer.authorize(caller, operation, tenant: caller.tenant, environment: environment, key: key)
            let result = try await body(scope)
            if scope.didCommit {
                caller.audit.written()
                if scope.provesKey, let derived = scope.key { credentials.keys.markProven(derived.index) }
                try await replicateLocalWrite()
            }
            observer.recordOperation(operation, outcome: .success)
            return result
        } catch {
            // A key that opened nothing it was tried on is dropped from the cache unless proven.
            if let derived = scope.key, ServiceError.domain(error)?.kind == .wrongUserKey {
                credentials.keys.reportFailure(derived.index)
            }
            let kind = ServiceError.domain(error)?.kind
            let notFound = [.notFound, .versionNotFound, .versionPruned, .versionIsDelete, .collected].contains(kind)
            observer.recordOperation(operation, outcome: notFound ? .notFound : .error)
            throw error
        }
    }

    /// After a local write: wake replication and, with a write quorum, wait for it (503 when
    /// it is not reached in time).
    func replicateLocalWrite() async throws {
        guard let cluster, cluster.settings.mode == .replica else { return }
        cluster.localWriteCommitted()
        guard cluster.settings.writeQuorum != .one else { return }
        do {
            try await cluster.awaitQuorum(seq: try await cluster.store.lastOwnSeq())
        } catch let error as QuorumNotReached {
            throw ServiceError(.quorumNotReached, "Write quorum not reached: \(error.description)", retryAfter: 1)
        }
    }

    /// The entries the caller's policy lets it see with `capability`: all of them without
    /// access control. Every listing filters through here before it decrypts or counts, so
    /// that what a policy hides is neither shown nor counted.
    func visible(_ entries: [ConfigEntry], to caller: Caller, _ capabilities: Capability...) -> [ConfigEntry] {
        guard caller.principal != nil else { return entries }
        return entries.filter { e in capabilities.allSatisfy { caller.may($0, environment: e.environment, key: e.key) } }
    }

    /// The entries the caller's key opens, with their plaintexts, in order: the others are left
    /// out. If there are entries and the key opens none, it is the wrong key (401); if it opens
    /// any, it is proven. Every attempt is counted at once.
    private func opened(_ entries: [ConfigEntry], with key: CachedKey) throws(ServiceError) -> [(entry: ConfigEntry, plaintext: [UInt8])] {
        let opened = entries.compactMap { entry in cipher.tryDecrypt(entry.ciphertext, with: key, count: false).map { (entry, $0) } }
        observer.recordEncryption("decrypt", count: entries.count)
        if !entries.isEmpty && opened.isEmpty { throw ServiceError.wrongUserKey }
        if !opened.isEmpty { credentials.keys.markProven(key.index) }
        return opened
    }

    /// Decrypts a stored value with the caller's key; a key that opens it is proven (its
    /// derivation is refunded to the limiter and it stays cached).
    private func open(_ token: String, _ scope: Scope) async throws -> [UInt8] {
        let key = try await scope.callerKey()
        let plaintext = try cipher.decrypt(token, with: key)
        credentials.keys.markProven(key.index)
        return plaintext
    }

    // MARK: - Create, read, update, delete, list

    public func create(_ caller: Caller, _ address: EntryAddress, category: String?, value: JSONValue) async throws -> ConfigRecord {
        try await perform(.create, caller, tenant: address.tenant, environment: address.environment, key: address.key) { scope in
            let key = try await scope.callerKey()
            let token = try cipher.encrypt(value, with: key)
            let entry = try await storage.create(
                address,
                category: category,
                ciphertext: token,
                actor: scope.actor,
                audit: scope.auditRecord(status: 201)
            )
            // A create checks the key against nothing: it proves nothing (the limiter counts it).
            scope.committed(provesKey: false)
            return ConfigRecord(entry: entry, valueJSON: JSONWriter.encode(value))
        }
    }

    public func read(_ caller: Caller, _ address: EntryAddress) async throws -> ConfigRecord {
        try await perform(.read, caller, tenant: address.tenant, environment: address.environment, key: address.key) { scope in
            var found = try await storage.entry(address)
            if found == nil { found = try await federatedEntry(address) }
            guard let entry = found else { throw StoreError.notFound(environment: address.environment, key: address.key) }
            return ConfigRecord(entry: entry, valueJSON: ValueCipher.jsonText(try await open(entry.ciphertext, scope)))
        }
    }

    public func update(_ caller: Caller, _ address: EntryAddress, category: String?, value: JSONValue) async throws -> ConfigRecord {
        try await perform(.update, caller, tenant: address.tenant, environment: address.environment, key: address.key) { scope in
            let key = try await scope.callerKey()
            let token = try cipher.encrypt(value, with: key)
            let entry = try await storage.update(
                address,
                category: category,
                ciphertext: token,
                actor: scope.actor,
                audit: scope.auditRecord(status: 200),
                authenticates: ValueCipher.authenticator(key)
            )
            scope.committed()
            return ConfigRecord(entry: entry, valueJSON: JSONWriter.encode(value))
        }
    }

    public func delete(_ caller: Caller, _ address: EntryAddress) async throws {
        try await perform(.delete, caller, tenant: address.tenant, environment: address.environment, key: address.key) { scope in
            let key = try await scope.callerKey()
            try await storage.delete(
                address,
                actor: scope.actor,
                audit: scope.auditRecord(status: 200),
                authenticates: ValueCipher.authenticator(key)
            )
            scope.committed()
        }
    }

    /// The entries the caller's key opens, in creation order; entries written under other
    /// user keys are left out and counted. If there are entries and none opens, the key is
    /// wrong (401). In federated mode every healthy peer's entries are merged: the newest
    /// revision of each (environment, key) wins, tombstones included, so the list agrees
    /// with what a read of each key answers.
    public func list(_ caller: Caller, _ query: ListQuery) async throws -> ListPage {
        var query = query
        query.tenant = caller.tenant
        return try await perform(.list, caller, environment: query.environment, key: nil) { scope in
            let key = try await scope.callerKey()
            let entries: [ConfigEntry]
            if federated {
                guard query.after == nil else {
                    throw ServiceError.unprocessable(
                        "after pages by this node's entry ids, which differ between federated nodes; use offset and limit"
                    )
                }
                entries = try await federatedList(query) { e in
                    caller.may(.list, environment: e.environment, key: e.key) && caller.may(.read, environment: e.environment, key: e.key)
                }
            } else if caller.principal.map({ $0.policy.allowsEverywhere(.list) && $0.policy.allowsEverywhere(.read) }) ?? true {
                entries = try await storage.list(
                    tenant: query.tenant,
                    environment: query.environment,
                    category: query.category,
                    limit: query.limit,
                    offset: query.offset,
                    afterID: query.after,
                    includeDeleted: false
                )
            } else {
                // A scoped policy pages what it may see: offset, after and limit count only
                // those entries, so a page's length and its next id say nothing of the others.
                let all = visible(
                    try await storage.all(tenant: query.tenant, environment: query.environment, category: query.category),
                    to: caller,
                    .list,
                    .read
                )
                entries = Array(all.filter { e in query.after.map { e.id > $0 } ?? true }.dropFirst(query.offset).prefix(query.limit ?? Int.max))
            }
            // A listing carries values: what it shows, the policy lets the caller list and read.
            let shown = visible(entries, to: caller, .list, .read)
            let records = try opened(shown, with: key).map { ConfigRecord(entry: $0.entry, valueJSON: ValueCipher.jsonText($0.plaintext)) }
            var nextAfter: Int64?
            if let limit = query.limit, entries.count == limit, let last = entries.last, !federated { nextAfter = last.id }
            return ListPage(records: records, skipped: shown.count - records.count, nextAfter: nextAfter)
        }
    }

    /// The entries the caller's key opens, counted (OpenSecureConf's `/stats`, limited to what
    /// the caller may see: entries under other user keys are not counted, and a key that opens
    /// nothing where there are entries is wrong, 401).
    public func statistics(_ caller: Caller) async throws -> EntryStatistics {
        let tenant = caller.tenant
        return try await perform(.stats, caller, environment: nil, key: nil) { scope in
            let key = try await scope.callerKey()
            var stats = EntryStatistics()
            for (entry, _) in try opened(visible(try await storage.all(tenant: tenant), to: caller, .list), with: key) {
                stats.totalKeys += 1
                stats.keysByCategory[entry.category ?? "uncategorized", default: 0] += 1
                stats.keysByEnvironment[entry.environment, default: 0] += 1
            }
            return stats
        }
    }

    /// Per node of the cluster, the live entries the caller's key opens there: this node's
    /// from its store, each peer's from its current entries (ciphertexts, fetched over the
    /// authenticated peer protocol and opened here; the user key never leaves this node).
    public func distribution(_ caller: Caller) async throws -> Distribution {
        try await perform(.distribution, caller, environment: nil, key: nil) { scope in
            guard let cluster else { throw ServiceError.badRequest("Clustering is not enabled") }
            let key = try await scope.callerKey()
            func opened(_ tokens: [String]) -> Int { tokens.reduce(0) { $0 + (cipher.tryDecrypt($1, with: key, count: false) == nil ? 0 : 1) } }
            let local = visible(try await storage.all(tenant: caller.tenant), to: caller, .list)
            var nodes = [
                Distribution.Node(nodeID: cluster.settings.nodeID, isLocal: true, isHealthy: true, keysCount: opened(local.map(\.ciphertext)))
            ]
            var tried = local.count
            let health = Dictionary(cluster.peerStatuses.map { ($0.nodeID, $0.healthy) }, uniquingKeysWith: { a, _ in a })
            // Each peer answers with the caller's tenant's entries, named as stored.
            for (peer, entries) in await cluster.entriesByPeer(tenant: caller.tenant) {
                let live = (entries ?? []).filter { r in
                    let (tenant, environment) = TenantNames.split(r.environment)
                    return !r.deleted && tenant == caller.tenant && caller.may(.list, environment: environment, key: r.key)
                }.map(\.ciphertext)
                tried += live.count
                nodes.append(
                    Distribution.Node(
                        nodeID: peer,
                        isLocal: false,
                        isHealthy: entries != nil && (health[peer] ?? false),
                        keysCount: opened(live)
                    )
                )
            }
            observer.recordEncryption("decrypt", count: tried)
            if tried > 0 && nodes.allSatisfy({ $0.keysCount == 0 }) { throw ServiceError.wrongUserKey }
            if nodes.contains(where: { $0.keysCount > 0 }) { credentials.keys.markProven(key.index) }
            return Distribution(mode: cluster.settings.mode.rawValue, nodes: nodes)
        }
    }

    /// OpenSecureConf 3.1's backup of what the caller's key opens (filtered by environment and
    /// category), sealed under `password` with a fresh salt: the document holds the values in
    /// the clear inside the sealed token, so only the password opens it.
    public func backup(_ caller: Caller, password: String, environment: String?, category: String?) async throws -> BackupResult {
        try await perform(.backup, caller, environment: environment, key: nil) { scope in
            guard !password.isEmpty else { throw ServiceError.unprocessable("X-Backup-Password must not be empty") }
            let key = try await scope.callerKey()
            var records: [JSONValue] = []
            for (entry, plaintext) in try opened(
                visible(try await storage.all(tenant: caller.tenant, environment: environment, category: category), to: caller, .read),
                with: key
            ) {
                records.append(
                    .object([
                        ("id", .number(String(entry.id))), ("key", .string(entry.key)), ("category", entry.category.map(JSONValue.string) ?? .null),
                        ("environment", .string(entry.environment)), ("value", ValueCipher.jsonValue(plaintext)),
                        ("created_at", .string(Timestamp.python(micros: entry.createdAt) + "Z")),
                        ("updated_at", .string(Timestamp.python(micros: entry.updatedAt) + "Z")),
                    ])
                )
            }
            let now = Date()
            let id = "backup-\(Int(now.timeIntervalSince1970))"
            let timestamp = Timestamp.python(micros: Int64(now.timeIntervalSince1970 * 1_000_000)) + "Z"
            let document = JSONWriter.encode(
                .object([
                    ("version", .string(OSCBackup.version)), ("backup_id", .string(id)), ("backup_timestamp", .string(timestamp)),
                    ("total_keys", .number(String(records.count))), ("configurations", .array(records)),
                ]),
                style: .python
            )
            let salt = OpenSSL.randomBytes(OSCBackup.saltLength)
            let sealing = try await credentials.keys.deriveOnce(password: Array(password.utf8), salt: salt, iterations: OSCBackup.iterations)
            observer.recordEncryption("encrypt", count: 1)
            return BackupResult(
                backupData: OSCBackup.seal(document, salt: salt, key: sealing),
                totalKeys: records.count,
                backupID: id,
                timestamp: timestamp
            )
        }
    }

    /// Imports an OpenSecureConf 3.1 backup under the caller's user key: each configuration is
    /// created, or (with `overwrite`) replaced when the caller's key opens its current value,
    /// else skipped; what cannot be imported is counted with its reason. 400 when the backup
    /// is malformed or the password does not open it.
    public func importBackup(_ caller: Caller, backupData: String, password: String, overwrite: Bool) async throws -> ImportReport {
        try await perform(.importBackup, caller, environment: nil, key: nil) { scope in
            let (salt, token) = try OSCBackup.split(backupData)
            let opening = try await credentials.keys.deriveOnce(password: Array(password.utf8), salt: salt, iterations: OSCBackup.iterations)
            observer.recordEncryption("decrypt", count: 1)
            guard let document = try? Fernet.decrypt(token, key: opening) else {
                throw ServiceError.badRequest("Decryption failed: invalid password or corrupted backup")
            }
            let (id, timestamp, configurations) = try OSCBackup.configurations(document)
            let key = try await scope.callerKey()
            var report = ImportReport(backupID: id ?? "unknown", backupTimestamp: timestamp ?? "unknown", totalInBackup: configurations.count)
            var written: [String] = []
            var replaced = false
            for config in configurations {
                guard case .object(let members) = config else {
                    report.failed.append(("unknown", "not a configuration object"))
                    continue
                }
                func member(_ name: String) -> JSONValue? { members.last { $0.0 == name }?.1 }
                let name = member("key")?.stringValue ?? "unknown"
                do {
                    guard member("key")?.stringValue != nil else { throw ServiceError.unprocessable("key is missing or not a string") }
                    if let problem = EntryNames.keyProblem(name) { throw ServiceError.unprocessable(problem) }
                    guard let value = member("value") else { throw ServiceError.unprocessable("value is missing") }
                    var environment = EntryAddress.defaultEnvironment
                    if case .string(let e)? = member("environment"), !e.isEmpty { environment = e }
                    if let problem = EntryNames.nameProblem(environment, field: "environment") { throw ServiceError.unprocessable(problem) }
                    var category: String?
                    if case .string(let c)? = member("category"), !c.isEmpty {
                        if let problem = EntryNames.nameProblem(c, field: "category") { throw ServiceError.unprocessable(problem) }
                        category = c
                    }
                    let address = EntryAddress(tenant: caller.tenant, environment: environment, key: name)
                    // Each configuration of the backup as a write of its own: the policy decides per entry.
                    try authorizer.authorize(caller, .create, tenant: caller.tenant, environment: environment, key: name)
                    let ciphertext = try cipher.encrypt(value, with: key)
                    caller.audit.target(environment: environment, key: name)
                    if try await storage.entry(address) != nil {
                        guard overwrite else {
                            report.skipped += 1
                            continue
                        }
                        _ = try await storage.update(
                            address,
                            category: category,
                            ciphertext: ciphertext,
                            actor: scope.actor,
                            audit: scope.auditRecord(status: 200),
                            authenticates: ValueCipher.authenticator(key)
                        )
                        replaced = true
                    } else {
                        _ = try await storage.create(
                            address,
                            category: category,
                            ciphertext: ciphertext,
                            actor: scope.actor,
                            audit: scope.auditRecord(status: 200)
                        )
                    }
                    written.append(name)
                    report.imported += 1
                } catch {
                    let reason: String
                    if case StoreError.wrongKey = error {
                        reason = "the existing value is under another user key"
                    } else {
                        reason = ServiceError.domain(error)?.detail ?? "import failed"
                    }
                    report.failed.append((name, reason))
                }
            }
            if !written.isEmpty { scope.committed(provesKey: replaced) }
            return report
        }
    }

    /// A node shutting down no longer asks its peers (its requests to them are aborted): a
    /// federated read it cannot answer alone gets 503, not a 404 or a partial list.
    private func ensurePeersAsked() throws {
        if cluster?.isShuttingDown == true {
            throw ServiceError(.shuttingDown, "This node is shutting down; retry on another node", retryAfter: 1)
        }
    }

    /// In federated mode, the newest live copy of an entry this node does not hold, from its peers.
    private func federatedEntry(_ address: EntryAddress) async throws -> ConfigEntry? {
        try ensurePeersAsked()
        // Federated peers answer for the default tenant only.
        guard let cluster, federated, address.tenant == Revision.defaultTenant,
            let revision = await cluster.federatedLookup(environment: address.environment, key: address.key), !revision.deleted
        else { return nil }
        return ConfigEntry(remote: revision)
    }

    /// The merged entries that `shown` keeps, paged by offset and limit (so a scoped policy's
    /// pages count only what it may see).
    private func federatedList(_ query: ListQuery, shown: (ConfigEntry) -> Bool) async throws -> [ConfigEntry] {
        try ensurePeersAsked()
        var newest: [String: ConfigEntry] = [:]
        for entry in try await storage.all(tenant: query.tenant, environment: query.environment, category: query.category, includeDeleted: true) {
            newest[entry.environment + "\u{0}" + entry.key] = entry
        }
        let peers =
            query.tenant == Revision.defaultTenant ? await cluster?.federatedEntries(environment: query.environment, category: query.category) : nil
        for revision in peers ?? [] {
            let id = revision.environment + "\u{0}" + revision.key
            if let current = newest[id], !revision.supersedes(hlc: current.hlc, origin: current.origin) { continue }
            newest[id] = ConfigEntry(remote: revision)
        }
        let merged = newest.values.filter { !$0.deleted && shown($0) }
            .sorted { ($0.createdAt, $0.environment, $0.key) < ($1.createdAt, $1.environment, $1.key) }
        // Paged like a single node's list: offset, then at most limit entries of the merged order.
        return Array(merged.dropFirst(query.offset).prefix(query.limit ?? Int.max))
    }

    // MARK: - History

    /// The key's versions, without values. Actors are shown to API-key holders and to
    /// callers whose key opens the newest value.
    public func versions(_ caller: Caller, _ address: EntryAddress) async throws -> VersionListing {
        try await perform(.versions, caller, tenant: address.tenant, environment: address.environment, key: address.key) { scope in
            guard let history = try await storage.history(address) else {
                throw StoreError.notFound(environment: address.environment, key: address.key)
            }
            var showsActors = caller.holdsAPIKey
            if !showsActors, caller.userKey != nil, let newest = history.versions.last(where: { !$0.revision.deleted }) {
                _ = try await open(newest.revision.ciphertext, scope)
                showsActors = true
            }
            return VersionListing(address: address, history: history, showsActors: showsActors)
        }
    }

    /// Version n's value, with `version`; 401 if the caller's key does not open it, 404 if
    /// there is no such version or it is a delete.
    public func readVersion(_ caller: Caller, _ address: EntryAddress, version n: Int) async throws -> ConfigRecord {
        try await perform(.readVersion, caller, tenant: address.tenant, environment: address.environment, key: address.key) { scope in
            let (numbered, entryID) = try await storage.version(n, of: address)
            let plaintext = try await value(of: numbered, address, scope)
            return ConfigRecord(
                entry: ConfigEntry(numbered.revision, id: entryID),
                valueJSON: JSONWriter.encode(ValueCipher.jsonValue(plaintext)),
                version: numbered.version
            )
        }
    }

    /// The value as of `at` (microseconds), from the newest revision whose hybrid-logical-clock
    /// time is at or before it; 404 if the key did not exist or was deleted then.
    public func readAt(_ caller: Caller, _ address: EntryAddress, at: Int64, describingTime when: String) async throws -> ConfigRecord {
        try await perform(.readAt, caller, tenant: address.tenant, environment: address.environment, key: address.key) { scope in
            let (past, entryID) = try await storage.pastState(of: address, atOrBeforeMicros: at)
            switch past {
            case .absent, .deleted:
                throw ServiceError(
                    .notFound,
                    "Configuration with key '\(address.key)' did not exist in environment '\(address.environment)' at \(when)"
                )
            case .pruned:
                throw ServiceError(
                    .versionPruned,
                    "The value of configuration '\(address.key)' in environment '\(address.environment)' at \(when) was pruned (OSC_MAX_VERSIONS)"
                )
            case .collected:
                throw ServiceError(
                    .collected,
                    "Configuration '\(address.key)' in environment '\(address.environment)' was deleted after \(when) and its history collected (OSC_TOMBSTONE_HORIZON)"
                )
            case .live(let revision):
                let plaintext = try await open(revision.ciphertext, scope)
                var entry = ConfigEntry(revision, id: entryID ?? 0)
                entry.deleted = false
                return ConfigRecord(entry: entry, valueJSON: JSONWriter.encode(ValueCipher.jsonValue(plaintext)))
            }
        }
    }

    /// Writes a new revision holding version n's value (re-encrypted under the caller's key,
    /// which must open version n and, if the key is live, its current value) and returns the
    /// new current entry with its `version`. A deleted key comes back.
    public func rollback(_ caller: Caller, _ address: EntryAddress, to n: Int) async throws -> ConfigRecord {
        try await perform(.rollback, caller, tenant: address.tenant, environment: address.environment, key: address.key) { scope in
            let (numbered, _) = try await storage.version(n, of: address)
            let plaintext = try await value(of: numbered, address, scope)
            let key = try await scope.callerKey()
            let (entry, version) = try await storage.rollback(
                address,
                category: numbered.revision.category,
                ciphertext: cipher.encrypt(plaintext: plaintext, with: key),
                actor: scope.actor,
                audit: scope.auditRecord(status: 200),
                authenticates: ValueCipher.authenticator(key)
            )
            scope.committed()
            return ConfigRecord(entry: entry, valueJSON: JSONWriter.encode(ValueCipher.jsonValue(plaintext)), version: version)
        }
    }

    /// RFC 6902 operations turning version `from`'s value into version `to`'s; the caller's key must open both.
    public func diff(_ caller: Caller, _ address: EntryAddress, from: Int, to: Int) async throws -> [JSONPatch.Operation] {
        try await perform(.diff, caller, tenant: address.tenant, environment: address.environment, key: address.key) { scope in
            let (first, _) = try await storage.version(from, of: address)
            let (second, _) = try await storage.version(to, of: address)
            let before = try await value(of: first, address, scope)
            let after = try await value(of: second, address, scope)
            return JSONPatch.diff(from: ValueCipher.jsonValue(before), to: ValueCipher.jsonValue(after))
        }
    }

    /// A version's value: decrypted, or 404 for a delete.
    /// A past value, for the operations that reveal one (a version, a diff, a rollback's
    /// answer): the caller's policy must let it read the key, whatever else it allows.
    private func value(of numbered: NumberedRevision, _ address: EntryAddress, _ scope: Scope) async throws -> [UInt8] {
        if let principal = scope.caller.principal, !principal.policy.allows(.read, environment: address.environment, key: address.key) {
            throw ServiceError(
                .forbidden,
                "\(principal.subject) lacks the 'read' capability on environment '\(address.environment.prefix(100))', key '\(address.key.prefix(100))'"
            )
        }
        guard !numbered.revision.deleted else {
            throw StoreError.versionIsDelete(environment: address.environment, key: address.key, version: numbered.version)
        }
        return try await open(numbered.revision.ciphertext, scope)
    }

    /// Restores one environment to how it was at `at` by writing new revisions, atomically:
    /// changed keys get their old value back, keys deleted since return, keys created since
    /// are deleted. Keys the caller's key cannot open (then or now) are left alone and
    /// counted (never named); keys whose old value was pruned are listed. A key that opens
    /// nothing where something could be opened is refused (401).
    public func restore(_ caller: Caller, environment: String, at: Int64) async throws -> RestoreReport {
        let tenant = caller.tenant
        return try await perform(.restore, caller, environment: environment, key: nil) { scope in
            let key = try await scope.callerKey()
            var attempt = 0
            while true {
                attempt += 1
                let plan = try await plan(tenant: tenant, environment: environment, atOrBeforeMicros: at, key: key) {
                    caller.may(.restore, environment: environment, key: $0)
                }
                do {
                    if !plan.changes.isEmpty {
                        try await storage.restore(
                            tenant: tenant,
                            environment: environment,
                            changes: plan.changes,
                            actor: scope.actor,
                            audit: scope.auditRecord(status: 200)
                        )
                        scope.committed()
                    }
                    if plan.opened { credentials.keys.markProven(key.index) }
                    // Nothing opened with this key where something could have: a wrong key, refused.
                    if !plan.opened && plan.sawLive { throw ServiceError.wrongUserKey }
                    return plan.report
                } catch StoreError.conflict where attempt < 3 {
                    caller.logger.debug("restore raced a write; planning again", metadata: ["attempt": "\(attempt)"])
                    continue
                }
            }
        }
    }

    /// Re-encrypts, under `newUserKey`, every current value of `environment` that the caller's
    /// key opens (and its policy lets it restore), as one write: one audit record, replicated
    /// like a restore. Values under other user keys are left as they are and counted. With
    /// `purge`, the rekeyed keys' older revisions (the old ciphertexts) leave history on every
    /// node that holds the new ones (`Revision.purgesThrough`); without it they stay (the
    /// history stays whole; OSC_MAX_VERSIONS prunes it).
    public func rekey(_ caller: Caller, environment: String, newUserKey: String, purge: Bool = false) async throws -> RekeyReport {
        let tenant = caller.tenant
        return try await perform(.rekey, caller, environment: environment, key: nil) { scope in
            let old = try await scope.callerKey()
            let new = try await credentials.derivedKey(for: newUserKey, client: caller.client)
            guard new.index != old.index else { throw ServiceError.unprocessable("the new user key is the old one") }
            var attempt = 0
            while true {
                attempt += 1
                var report = RekeyReport(environment: environment)
                var changes: [PlannedRestore] = []
                let entries = visible(try await storage.all(tenant: tenant, environment: environment), to: caller, .restore)
                for entry in entries {
                    guard let plaintext = cipher.tryDecrypt(entry.ciphertext, with: old) else {
                        report.otherKeys += 1
                        continue
                    }
                    changes.append(
                        PlannedRestore(
                            key: entry.key,
                            expectedHLC: entry.hlc,
                            expectedOrigin: entry.origin,
                            change: .put(category: entry.category, ciphertext: cipher.encrypt(plaintext: plaintext, with: new)),
                            purgesOlder: purge
                        )
                    )
                    report.rekeyed.append(entry.key)
                }
                if changes.isEmpty && !entries.isEmpty { throw ServiceError.wrongUserKey }
                do {
                    if !changes.isEmpty {
                        try await storage.restore(
                            tenant: tenant,
                            environment: environment,
                            changes: changes,
                            actor: scope.actor,
                            audit: scope.auditRecord(status: 200)
                        )
                        scope.committed()
                        credentials.keys.markProven(new.index)
                    }
                    return report
                } catch StoreError.conflict where attempt < 3 {
                    continue
                }
            }
        }
    }

    struct RestorePlan {
        var report: RestoreReport
        var changes: [PlannedRestore] = []
        /// Whether the caller's key opened at least one value.
        var opened = false
        /// Whether the environment holds a value the key could have opened.
        var sawLive = false
    }

    /// `allowed`: the keys the caller's policy lets it restore (the others are left as they are).
    private func plan(
        tenant: String,
        environment: String,
        atOrBeforeMicros at: Int64,
        key: CachedKey,
        allowed: (String) -> Bool
    ) async throws -> RestorePlan {
        var plan = RestorePlan(report: RestoreReport(environment: environment, at: at))
        for (current, past) in try await storage.pastStates(tenant: tenant, environment: environment, atOrBeforeMicros: at) where allowed(current.key)
        {
            let expected = (hlc: current.hlc, origin: current.origin)
            if !current.deleted { plan.sawLive = true }
            func open(_ token: String) -> [UInt8]? {
                let plaintext = cipher.tryDecrypt(token, with: key)
                if plaintext != nil { plan.opened = true }
                return plaintext
            }
            func put(_ category: String?, _ plaintext: [UInt8]) {
                plan.changes.append(
                    PlannedRestore(
                        key: current.key,
                        expectedHLC: expected.hlc,
                        expectedOrigin: expected.origin,
                        change: .put(category: category, ciphertext: cipher.encrypt(plaintext: plaintext, with: key))
                    )
                )
            }
            switch past {
            case .pruned, .collected:
                plan.report.pruned.append(current.key)
            case .absent, .deleted:
                if current.deleted {
                    plan.report.unchanged += 1
                } else if open(current.ciphertext) == nil {
                    plan.report.undecryptable += 1
                } else {
                    plan.changes.append(PlannedRestore(key: current.key, expectedHLC: expected.hlc, expectedOrigin: expected.origin, change: .delete))
                    plan.report.deleted.append(current.key)
                }
            case .live(let then):
                if !current.deleted, then.hlc == current.hlc, then.origin == current.origin {
                    plan.report.unchanged += 1
                    // Until the key has opened something, check it here too: a restore with a
                    // key that opens nothing is a wrong key (401), not a no-op.
                    plan.sawLive = true
                    if !plan.opened { _ = open(current.ciphertext) }
                    continue
                }
                guard let old = open(then.ciphertext) else {
                    plan.report.undecryptable += 1
                    continue
                }
                if current.deleted {
                    put(then.category, old)
                    plan.report.recreated.append(current.key)
                    continue
                }
                guard let now = open(current.ciphertext) else {
                    plan.report.undecryptable += 1
                    continue
                }
                if now == old && current.category == then.category {
                    plan.report.unchanged += 1
                    continue
                }
                put(then.category, old)
                plan.report.restored.append(current.key)
            }
        }
        return plan
    }
}

extension ConfigEntry {
    /// An entry held by a peer (federated mode); it has no local id.
    public init(remote r: Revision) {
        self.init(r, id: 0)
    }
}
