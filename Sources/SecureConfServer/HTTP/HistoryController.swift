import SecureConfJSON
import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCrypto
import SecureConfStore

/// Version history, version reads, rollback, diff, point-in-time reads and environment
/// restore, over the store's append-only revisions. Nothing here rewrites history: a
/// rollback or a restore writes new revisions. The handlers read the request and hand the
/// work to `HistoryOperations`.
struct HistoryController<Context: AuditedRequestContext>: Sendable {
    let node: SecureConfNode

    private func operations(_ context: Context) -> HistoryOperations { HistoryOperations(node: node, client: context.clientIP) }
    private var minimumUserKeyLength: Int { node.configuration.minUserKeyLength }

    /// `{key}/versions`, `{key}/versions/{version}`, `{key}/rollback`, `{key}/diff` under
    /// `/configs`, and `/restore` on `root`.
    func addRoutes(configs: RouterGroup<Context>, root: RouterGroup<Context>) {
        configs.get("{key}/versions", use: versions)
        configs.get("{key}/versions/{version}", use: readVersion)
        configs.post("{key}/rollback", use: rollback)
        configs.get("{key}/diff", use: diff)
        root.post("restore", use: restore)
    }

    static func positive(_ query: [String: String], _ name: String) throws(APIError) -> Int {
        guard let raw = query[name], !raw.isEmpty else { throw APIError.unprocessable("\(name) is required") }
        guard let n = Int(raw), (1...Int(Int32.max)).contains(n) else {
            throw APIError.unprocessable("\(name) must be a version number, a whole number from 1")
        }
        return n
    }

    static func time(_ raw: String?, _ name: String) throws(APIError) -> Int64 {
        guard let raw, !raw.isEmpty else { throw APIError.unprocessable("\(name) is required (an RFC 3339 time such as 2025-01-31T12:00:00Z)") }
        guard let micros = RFC3339.parseMicros(raw) else {
            throw APIError.unprocessable("\(name) must be an RFC 3339 time such as 2025-01-31T12:00:00Z or 2025-01-31T13:00:00.5%2B01:00")
        }
        return micros
    }

    @Sendable func versions(_ request: Request, context: Context) async throws -> Response {
        let (configKey, _, environment) = try RequestInput.addressedKey(request, context)
        // Actors are shown to audit readers (the API key) and to callers whose key opens the entry.
        let auditReader = node.configuration.apiKey.map { expected in
            request.headers[RequestInput.apiKeyHeader].map {
                OpenSSL.constantTimeEquals(OpenSSL.sha256(Array($0.utf8)), OpenSSL.sha256(Array(expected.utf8)))
            } ?? false
        } ?? false
        let userKey = request.headers[RequestInput.userKeyHeader] == nil ? nil
            : try RequestInput.userKey(request, minimumLength: minimumUserKeyLength)
        return try await operations(context).versions(environment: environment, key: configKey, userKey: userKey, auditReader: auditReader,
                                                      audit: context.audit)
    }

    @Sendable func readVersion(_ request: Request, context: Context) async throws -> Response {
        let (configKey, query, environment) = try RequestInput.addressedKey(request, context)
        let userKey = try RequestInput.userKey(request, minimumLength: minimumUserKeyLength)
        guard let raw = context.parameters.get("version"), let n = Int(raw), n >= 1 else {
            throw APIError.unprocessable("version must be a version number, a whole number from 1")
        }
        return try await operations(context).readVersion(n, environment: environment, key: configKey, userKey: userKey, audit: context.audit)
    }

    /// `GET /configs/{key}?at=`, called by `ConfigController.read`.
    func readAt(_ request: Request, context: Context, configKey: String, environment: String, at raw: String) async throws -> Response {
        context.audit.action("read_at")
        let at = try Self.time(raw, "at")
        let userKey = try RequestInput.userKey(request, minimumLength: minimumUserKeyLength)
        return try await operations(context).readAt(at, environment: environment, key: configKey, userKey: userKey, audit: context.audit)
    }

    @Sendable func rollback(_ request: Request, context: Context) async throws -> Response {
        let (configKey, query, environment) = try RequestInput.addressedKey(request, context)
        let userKey = try RequestInput.userKey(request, minimumLength: minimumUserKeyLength)
        let n = try Self.positive(query, "version")
        return try await operations(context).rollback(to: n, environment: environment, key: configKey, userKey: userKey, audit: context.audit)
    }

    @Sendable func diff(_ request: Request, context: Context) async throws -> Response {
        let (configKey, query, environment) = try RequestInput.addressedKey(request, context)
        let userKey = try RequestInput.userKey(request, minimumLength: minimumUserKeyLength)
        let from = try Self.positive(query, "from")
        let to = try Self.positive(query, "to")
        return try await operations(context).diff(from: from, to: to, environment: environment, key: configKey, userKey: userKey, audit: context.audit)
    }

    @Sendable func restore(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        let environment = try RequestInput.environment(query["environment"])
        context.audit.target(environment: environment)
        let at = try Self.time(query["at"], "at")
        let userKey = try RequestInput.userKey(request, minimumLength: minimumUserKeyLength)
        return try await operations(context).restore(environment: environment, at: at, userKey: userKey, audit: context.audit)
    }
}

/// The history operations behind `HistoryController`, given validated input.
struct HistoryOperations: Sendable {
    let node: SecureConfNode
    /// The caller's address, for the failed-attempt limiter.
    let client: String

    private var cipher: ValueCipher { ValueCipher(node: node) }

    /// The caller's derived key, noted as the request's actor.
    private func callerKey(_ userKey: String, _ audit: AuditNote) async throws -> CachedKey {
        let key = try await node.derivedKey(for: userKey, client: client)
        audit.actor(node.actor(for: key))
        return key
    }

    /// A version's value: decrypted, or 404 for a delete.
    private func value(of numbered: NumberedRevision, environment: String, key configKey: String, with key: CachedKey) throws -> [UInt8] {
        guard !numbered.revision.deleted else {
            throw StoreError.versionIsDelete(environment: environment, key: configKey, version: numbered.version)
        }
        return try cipher.decrypt(numbered.revision.ciphertext, with: key)
    }

    /// The key's versions, oldest first, without values: `{"key","environment","current_version",
    /// "pruned","versions":[{"version","created_at","deleted","origin_node","actor"}]}`.
    func versions(environment: String, key configKey: String, userKey: String?, auditReader: Bool, audit: AuditNote) async throws -> Response {
        guard let history = try await node.store.history(environment: environment, key: configKey) else {
            node.metrics.recordOperation("versions", success: false)
            throw StoreError.notFound(environment: environment, key: configKey)
        }
        var showActors = auditReader
        if !showActors, let userKey, let newest = history.versions.last(where: { !$0.revision.deleted }) {
            // The caller's key must open the newest value it can be checked against.
            let key = try await callerKey(userKey, audit)
            _ = try cipher.decrypt(newest.revision.ciphertext, with: key)
            showActors = true
        }
        node.metrics.recordOperation("versions", success: true)
        return JSONResponse.make { w in
            w.raw("{")
            w.member("key", first: true); w.string(configKey)
            w.member("environment"); w.string(environment)
            w.member("current_version"); w.integer(history.versions.last?.version ?? history.prunedCount)
            w.member("pruned"); w.integer(history.prunedCount)
            w.member("versions"); w.raw("[")
            for (i, numbered) in history.versions.enumerated() {
                if i > 0 { w.raw(",") }
                let r = numbered.revision
                w.raw("{")
                w.member("version", first: true); w.integer(numbered.version)
                w.member("created_at"); w.string(Timestamp.iso8601(micros: r.updatedAt))
                w.member("deleted"); w.raw(r.deleted ? "true" : "false")
                w.member("origin_node"); w.string(r.origin)
                w.member("actor"); w.optionalString(showActors ? r.actor : nil)
                w.raw("}")
            }
            w.raw("]}")
        }
    }

    /// Version n's value in the record shape plus `version`; 401 if the caller's key does
    /// not open it, 404 if there is no such version or it is a delete.
    func readVersion(_ n: Int, environment: String, key configKey: String, userKey: String, audit: AuditNote) async throws -> Response {
        do {
            let (numbered, entryID) = try await node.store.version(n, environment: environment, key: configKey)
            let key = try await callerKey(userKey, audit)
            let plaintext = try value(of: numbered, environment: environment, key: configKey, with: key)
            node.metrics.recordOperation("read_version", success: true)
            return JSONResponse.make { $0.versionRecord(numbered, entryID: entryID, valueJSON: JSONWriter.encode(ValueCipher.jsonValue(plaintext))) }
        } catch {
            node.metrics.recordOperation("read_version", success: false)
            throw error
        }
    }

    /// The value as of `at` (microseconds), from the newest revision whose hybrid-logical-clock
    /// time is at or before it; 404 if the key did not exist or was deleted then.
    func readAt(_ at: Int64, environment: String, key configKey: String, userKey: String, audit: AuditNote) async throws -> Response {
        do {
            let (past, entryID) = try await node.store.pastState(environment: environment, key: configKey, atOrBeforeMicros: at)
            let when = Timestamp.iso8601(micros: at)
            switch past {
            case .absent, .deleted:
                throw APIError(.notFound, "Configuration with key '\(configKey)' did not exist in environment '\(environment)' at \(when)", kind: "not_found")
            case .pruned:
                throw APIError(.notFound, "The value of configuration '\(configKey)' in environment '\(environment)' at \(when) was pruned (OSC_MAX_VERSIONS)",
                               kind: "version_pruned")
            case .live(let revision):
                let key = try await callerKey(userKey, audit)
                let plaintext = try cipher.decrypt(revision.ciphertext, with: key)
                node.metrics.recordOperation("read_at", success: true)
                let entry = ConfigEntry(id: entryID ?? 0, environment: environment, key: configKey, category: revision.category,
                                        ciphertext: revision.ciphertext, hlc: revision.hlc, origin: revision.origin, deleted: false,
                                        createdAt: revision.createdAt, updatedAt: revision.updatedAt)
                return JSONResponse.make { $0.record(entry, valueJSON: JSONWriter.encode(ValueCipher.jsonValue(plaintext))) }
            }
        } catch {
            node.metrics.recordOperation("read_at", success: false)
            throw error
        }
    }

    /// Writes a new revision holding version n's value (re-encrypted under the caller's key,
    /// which must open version n and, if the key is live, its current value) and returns the
    /// new current entry with its `version`. A deleted key comes back.
    func rollback(to n: Int, environment: String, key configKey: String, userKey: String, audit: AuditNote) async throws -> Response {
        do {
            let (numbered, _) = try await node.store.version(n, environment: environment, key: configKey)
            let key = try await callerKey(userKey, audit)
            let plaintext = try value(of: numbered, environment: environment, key: configKey, with: key)
            let token = cipher.encrypt(plaintext: plaintext, with: key)
            let derived = key.key
            let (entry, version) = try await node.store.rollback(
                environment: environment, key: configKey, category: numbered.revision.category, ciphertext: token,
                actor: node.actor(for: key), audit: audit.recordForWrite(status: 200),
                authenticates: { (try? Fernet.decrypt($0, key: derived)) != nil })
            audit.written()
            try await node.replicateLocalWrite()
            node.metrics.recordOperation("rollback", success: true)
            return JSONResponse.make { w in
                w.record(entry, valueJSON: JSONWriter.encode(ValueCipher.jsonValue(plaintext)), version: version)
            }
        } catch {
            node.metrics.recordOperation("rollback", success: false)
            throw error
        }
    }

    /// `{"from","to","operations":[RFC 6902 operations]}` turning version `from`'s value
    /// into version `to`'s; the caller's key must open both.
    func diff(from: Int, to: Int, environment: String, key configKey: String, userKey: String, audit: AuditNote) async throws -> Response {
        do {
            let (first, _) = try await node.store.version(from, environment: environment, key: configKey)
            let (second, _) = try await node.store.version(to, environment: environment, key: configKey)
            let key = try await callerKey(userKey, audit)
            let before = try value(of: first, environment: environment, key: configKey, with: key)
            let after = try value(of: second, environment: environment, key: configKey, with: key)
            node.metrics.recordOperation("diff", success: true)
            return Self.patchResponse(from: from, to: to, before: before, after: after)
        } catch {
            node.metrics.recordOperation("diff", success: false)
            throw error
        }
    }

    static func patchResponse(from: Int, to: Int, before: [UInt8], after: [UInt8]) -> Response {
        let operations = JSONPatch.diff(from: ValueCipher.jsonValue(before), to: ValueCipher.jsonValue(after))
        return JSONResponse.make { w in
            w.raw("{")
            w.member("from", first: true); w.integer(from)
            w.member("to"); w.integer(to)
            w.member("operations"); w.write(.array(operations.map(\.json)))
            w.raw("}")
        }
    }

    /// Restores one environment to how it was at `at` by writing new revisions, atomically:
    /// changed keys get their old value back, keys deleted since return, keys created since
    /// are deleted. Keys the caller's key cannot open (then or now) are left alone and
    /// counted in `undecryptable` (never named); keys whose old value was pruned, in
    /// `pruned`. A key that opens nothing where something could be opened is refused (401).
    func restore(environment: String, at: Int64, userKey: String, audit: AuditNote) async throws -> Response {
        let key = try await callerKey(userKey, audit)
        var attempt = 0
        while true {
            attempt += 1
            let plan = try await plan(environment: environment, atOrBeforeMicros: at, key: key)
            do {
                if !plan.changes.isEmpty {
                    try await node.store.restore(environment: environment, changes: plan.changes, actor: node.actor(for: key),
                                                 audit: audit.recordForWrite(status: 200))
                    audit.written()
                    try await node.replicateLocalWrite()
                }
                if plan.opened { node.keys.markProven(key.index) }
                if !plan.opened && plan.sawLive {
                    // Nothing opened with this key, something could have: a wrong key, refused.
                    node.metrics.recordOperation("restore", success: false)
                    throw APIError.wrongUserKey
                }
                node.metrics.recordOperation("restore", success: true)
                return Self.restoreResponse(plan, environment: environment, at: at)
            } catch StoreError.conflict where attempt < 3 {
                node.logger.debug("restore raced a write; planning again", metadata: ["attempt": "\(attempt)"])
                continue
            } catch {
                node.metrics.recordOperation("restore", success: false)
                throw error
            }
        }
    }

    static func restoreResponse(_ plan: RestorePlan, environment: String, at: Int64) -> Response {
        JSONResponse.make { w in
            func keys(_ list: [String]) { w.write(.array(list.map { .string($0) })) }
            w.raw("{")
            w.member("environment", first: true); w.string(environment)
            w.member("at"); w.string(Timestamp.iso8601(micros: at))
            w.member("restored"); keys(plan.restored)
            w.member("recreated"); keys(plan.recreated)
            w.member("deleted"); keys(plan.deleted)
            w.member("unchanged"); w.integer(plan.unchanged)
            // A count, never names: a caller learns nothing of keys its user key does not open.
            w.member("undecryptable"); w.integer(plan.undecryptable.count)
            w.member("pruned"); keys(plan.pruned)
            w.raw("}")
        }
    }

    struct RestorePlan {
        var changes: [PlannedRestore] = []
        var restored: [String] = []
        var recreated: [String] = []
        var deleted: [String] = []
        var unchanged = 0
        var undecryptable: [String] = []
        var pruned: [String] = []
        /// Whether the caller's key opened at least one value.
        var opened = false
        /// Whether the environment holds a value the key could have opened.
        var sawLive = false
    }

    private func plan(environment: String, atOrBeforeMicros at: Int64, key: CachedKey) async throws -> RestorePlan {
        var plan = RestorePlan()
        for (current, past) in try await node.store.pastStates(environment: environment, atOrBeforeMicros: at) {
            let expected = (hlc: current.hlc, origin: current.origin)
            if !current.deleted { plan.sawLive = true }
            func open(_ token: String) -> [UInt8]? {
                let plaintext = cipher.tryDecrypt(token, with: key)
                if plaintext != nil { plan.opened = true }
                return plaintext
            }
            switch past {
            case .pruned:
                plan.pruned.append(current.key)
            case .absent, .deleted:
                if current.deleted {
                    plan.unchanged += 1
                } else if open(current.ciphertext) == nil {
                    plan.undecryptable.append(current.key)
                } else {
                    plan.changes.append(PlannedRestore(key: current.key, expectedHLC: expected.hlc, expectedOrigin: expected.origin, change: .delete))
                    plan.deleted.append(current.key)
                }
            case .live(let then):
                if !current.deleted, then.hlc == current.hlc, then.origin == current.origin {
                    plan.unchanged += 1
                    // Until the key has opened something, check it here too: a restore with a
                    // key that opens nothing is a wrong key (401), not a no-op.
                    plan.sawLive = true
                    if !plan.opened { _ = open(current.ciphertext) }
                    continue
                }
                guard let old = open(then.ciphertext) else {
                    plan.undecryptable.append(current.key)
                    continue
                }
                if current.deleted {
                    plan.changes.append(PlannedRestore(key: current.key, expectedHLC: expected.hlc, expectedOrigin: expected.origin,
                                                       change: .put(category: then.category, ciphertext: cipher.encrypt(plaintext: old, with: key))))
                    plan.recreated.append(current.key)
                    continue
                }
                guard let now = open(current.ciphertext) else {
                    plan.undecryptable.append(current.key)
                    continue
                }
                if now == old && current.category == then.category {
                    plan.unchanged += 1
                    continue
                }
                plan.changes.append(PlannedRestore(key: current.key, expectedHLC: expected.hlc, expectedOrigin: expected.origin,
                                                   change: .put(category: then.category, ciphertext: cipher.encrypt(plaintext: old, with: key))))
                plan.restored.append(current.key)
            }
        }
        return plan
    }
}

extension JSONWriter {
    /// The record shape of one version: `{"id","key","category","environment","value",
    /// "created_at","updated_at","version"}`.
    mutating func versionRecord(_ numbered: NumberedRevision, entryID: Int64, valueJSON: [UInt8]) {
        let r = numbered.revision
        let entry = ConfigEntry(id: entryID, environment: r.environment, key: r.key, category: r.category, ciphertext: r.ciphertext,
                                hlc: r.hlc, origin: r.origin, deleted: r.deleted, createdAt: r.createdAt, updatedAt: r.updatedAt)
        record(entry, valueJSON: valueJSON, version: numbered.version)
    }
}
