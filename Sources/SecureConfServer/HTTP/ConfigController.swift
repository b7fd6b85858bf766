import SecureConfJSON
import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCluster
import SecureConfCrypto
import SecureConfStore

/// `/configs`: OpenSecureConf's create, read, update, delete and list, over the encrypted store.
struct ConfigController<Context: AuditedRequestContext>: Sendable {
    let node: SecureConfNode

    func addRoutes(to group: RouterGroup<Context>) {
        group.post(use: create)
        group.get(use: list)
        group.get("{key}", use: read)
        group.put("{key}", use: update)
        group.delete("{key}", use: delete)
    }

    private var configuration: NodeConfiguration { node.configuration }

    /// The caller's derived key (cache or one shared PBKDF2 run), noted as the request's actor.
    private func derivedKey(_ request: Request, _ context: Context) async throws -> CachedKey {
        let userKey = try RequestInput.userKey(request, minimumLength: configuration.minUserKeyLength)
        return try await derivedKey(userKey, context)
    }

    private func derivedKey(_ userKey: String, _ context: Context) async throws -> CachedKey {
        let key = try await node.derivedKey(for: userKey, client: context.clientIP)
        context.audit.actor(node.actor(for: key))
        return key
    }

    /// Encrypts a value as OpenSecureConf does: Python-style `json.dumps`, then Fernet.
    private func encrypt(_ value: JSONValue, with key: CachedKey) throws(APIError) -> String {
        try ValueCipher(node: node).encrypt(value, with: key)
    }

    /// Decrypts a stored value into JSON text; a MAC failure is the caller's wrong key.
    private func decrypt(_ entry: ConfigEntry, with key: CachedKey) throws(APIError) -> [UInt8] {
        ValueCipher.jsonText(try ValueCipher(node: node).decrypt(entry.ciphertext, with: key))
    }


    /// A write has committed: its audit record went with it, its key is proven right;
    /// replicate it, then count it once, as what the client receives (a missed quorum is a
    /// failure, counted by `failed`).
    private func committed(_ operation: String, _ key: CachedKey, _ context: Context, proven: Bool = true) async throws {
        context.audit.written()
        // A create checks the key against nothing: it proves nothing (the limiter counts it).
        if proven { node.keys.markProven(key.index) }
        try await replicated()
        node.metrics.recordOperation(operation, success: true)
    }

    /// A write failed: count it, and drop a provisional key that failed to authenticate.
    private func failed(_ operation: String, _ key: CachedKey, _ error: any Error) -> any Error {
        if case StoreError.wrongKey = error { node.keys.reportFailure(key.index) }
        node.metrics.recordOperation(operation, success: false)
        return error
    }

    private func replicated() async throws { try await node.replicateLocalWrite() }

    /// In federated mode, the newest live copy of an entry this node does not hold, from its peers.
    private func federatedEntry(environment: String, key: String) async -> ConfigEntry? {
        guard let cluster = node.cluster, cluster.settings.mode == .federated,
              let revision = await cluster.federatedLookup(environment: environment, key: key), !revision.deleted else { return nil }
        return ConfigEntry(remote: revision)
    }

    private func authenticator(_ key: CachedKey) -> @Sendable (String) -> Bool {
        let derived = key.key
        return { token in (try? Fernet.decrypt(token, key: derived)) != nil }
    }

    @Sendable func create(_ request: Request, context: Context) async throws -> Response {
        let userKey = try RequestInput.userKey(request, minimumLength: configuration.minUserKeyLength)
        let body = try await RequestInput.jsonObject(request, maxBytes: configuration.maxBodyBytes)
        guard let rawName = body["key"] else { throw APIError.unprocessable("key is required") }
        guard let name = rawName.stringValue else { throw APIError.unprocessable("key must be a string, not \(rawName.typeName)") }
        context.audit.target(key: name)
        let configKey = try RequestInput.validateKey(name)
        guard let value = body["value"] else { throw APIError.unprocessable("value is required") }
        let category = try RequestInput.category(body)
        let environment = try RequestInput.environment(try RequestInput.optionalString(body, "environment"))
        context.audit.target(environment: environment)
        let key = try await derivedKey(userKey, context)
        let token = try encrypt(value, with: key)
        do {
            let entry = try await node.store.create(environment: environment, key: configKey, category: category,
                                                    ciphertext: token, actor: node.actor(for: key), audit: context.audit.recordForWrite(status: 201))
            try await committed("create", key, context, proven: false)
            return JSONResponse.make(.created) { $0.record(entry, valueJSON: JSONWriter.encode(value)) }
        } catch {
            throw failed("create", key, error)
        }
    }

    @Sendable func read(_ request: Request, context: Context) async throws -> Response {
        let (configKey, query, environment) = try RequestInput.addressedKey(request, context)
        if let at = query["at"] {
            return try await HistoryController<Context>(node: node).readAt(request, context: context, configKey: configKey, environment: environment, at: at)
        }
        _ = try RequestInput.userKey(request, minimumLength: configuration.minUserKeyLength)
        let local = try await node.store.entry(environment: environment, key: configKey)
        let found: ConfigEntry?
        if let local { found = local } else { found = await federatedEntry(environment: environment, key: configKey) }
        guard let entry = found else {
            node.metrics.recordOperation("read", success: false)
            throw StoreError.notFound(environment: environment, key: configKey)
        }
        let key = try await derivedKey(request, context)
        do {
            let value = try decrypt(entry, with: key)
            node.metrics.recordOperation("read", success: true)
            return JSONResponse.make { $0.record(entry, valueJSON: value) }
        } catch {
            node.metrics.recordOperation("read", success: false)
            throw error
        }
    }

    @Sendable func update(_ request: Request, context: Context) async throws -> Response {
        let (configKey, query, environment) = try RequestInput.addressedKey(request, context)
        let userKey = try RequestInput.userKey(request, minimumLength: configuration.minUserKeyLength)
        let body = try await RequestInput.jsonObject(request, maxBytes: configuration.maxBodyBytes)
        guard let value = body["value"] else { throw APIError.unprocessable("value is required") }
        let category = try RequestInput.category(body)
        let key = try await derivedKey(userKey, context)
        let token = try encrypt(value, with: key)
        do {
            let entry = try await node.store.update(environment: environment, key: configKey, category: category,
                                                    ciphertext: token, actor: node.actor(for: key), audit: context.audit.recordForWrite(status: 200),
                                                    authenticates: authenticator(key))
            try await committed("update", key, context)
            return JSONResponse.make { $0.record(entry, valueJSON: JSONWriter.encode(value)) }
        } catch {
            throw failed("update", key, error)
        }
    }

    @Sendable func delete(_ request: Request, context: Context) async throws -> Response {
        let (configKey, query, environment) = try RequestInput.addressedKey(request, context)
        let key = try await derivedKey(request, context)
        do {
            try await node.store.delete(environment: environment, key: configKey, actor: node.actor(for: key),
                                        audit: context.audit.recordForWrite(status: 200), authenticates: authenticator(key))
            try await committed("delete", key, context)
            return JSONResponse.message("Configuration '\(configKey)' deleted successfully")
        } catch {
            throw failed("delete", key, error)
        }
    }

    /// A JSON array of the entries the caller's key decrypts, in creation order. Entries
    /// written under other user keys are left out (their count is in
    /// `X-SecureConf-Skipped`); if there are entries and none decrypts, the key is wrong: 401.
    /// `limit` (1–10000) with `offset` or `after` (the last `id` seen) pages through; the
    /// next `after` is in `X-SecureConf-Next-After`.
    @Sendable func list(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        let environment = try query["environment"].flatMap { $0.isEmpty ? nil : $0 }.map { v throws(APIError) in
            try RequestInput.validateName(v, field: "environment")
        }
        let category = try query["category"].flatMap { $0.isEmpty ? nil : $0 }.map { v throws(APIError) in
            try RequestInput.validateName(v, field: "category")
        }
        func number(_ name: String, _ range: ClosedRange<Int>) throws(APIError) -> Int? {
            guard let raw = query[name], !raw.isEmpty else { return nil }
            guard let n = Int(raw), range.contains(n) else {
                throw APIError.unprocessable("\(name) must be a whole number in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        let limit = try number("limit", 1...10_000)
        let offset = try number("offset", 0...Int(Int32.max)) ?? 0
        let after = try number("after", 0...Int.max).map(Int64.init)
        let key = try await derivedKey(request, context)
        var entries: [ConfigEntry]
        if let cluster = node.cluster, cluster.settings.mode == .federated {
            // Aggregate every healthy peer's entries: the newest revision of each (environment, key)
            // wins, tombstones included, so the list agrees with what a read of each key answers.
            var newest: [String: ConfigEntry] = [:]
            for entry in try await node.store.list(environment: environment, category: category, includeDeleted: true) {
                newest[entry.environment + "\u{0}" + entry.key] = entry
            }
            for revision in await cluster.federatedEntries(environment: environment, category: category) {
                let id = revision.environment + "\u{0}" + revision.key
                if let current = newest[id], !revision.supersedes(hlc: current.hlc, origin: current.origin) { continue }
                newest[id] = ConfigEntry(remote: revision)
            }
            guard after == nil else {
                throw APIError.unprocessable("after pages by this node's entry ids, which differ between federated nodes; use offset and limit")
            }
            let merged = newest.values.filter { !$0.deleted }
                .sorted { ($0.createdAt, $0.environment, $0.key) < ($1.createdAt, $1.environment, $1.key) }
            // Paged like a single node's list: offset, then at most limit entries of the merged order.
            entries = Array(merged.dropFirst(offset).prefix(limit ?? Int.max))
        } else {
            entries = try await node.store.list(environment: environment, category: category, limit: limit, offset: offset, afterID: after)
        }
        var writer = JSONWriter(capacity: 64 + entries.count * 256)
        writer.raw("[")
        var returned = 0
        var skipped = 0
        let cipher = ValueCipher(node: node)
        for entry in entries {
            guard let plaintext = cipher.tryDecrypt(entry.ciphertext, with: key, count: false) else {
                skipped += 1
                continue
            }
            if returned > 0 { writer.raw(",") }
            writer.record(entry, valueJSON: ValueCipher.jsonText(plaintext))
            returned += 1
        }
        writer.raw("]")
        node.metrics.recordEncryption("decrypt", count: entries.count)
        if !entries.isEmpty && returned == 0 {
            node.keys.reportFailure(key.index)
            node.metrics.recordOperation("list", success: false)
            throw APIError.wrongUserKey
        }
        if returned > 0 { node.keys.markProven(key.index) }
        node.metrics.recordOperation("list", success: true)
        var headers: HTTPFields = [:]
        if skipped > 0 { headers[HTTPField.Name("X-SecureConf-Skipped")!] = String(skipped) }
        if let limit, entries.count == limit, let last = entries.last, node.cluster?.settings.mode != .federated {
            headers[HTTPField.Name("X-SecureConf-Next-After")!] = String(last.id)
        }
        return JSONResponse.make(.ok, writer.bytes, headers: headers)
    }
}

extension ConfigEntry {
    /// An entry held by a peer (federated mode); it has no local id.
    init(remote r: Revision) {
        self.init(id: 0, environment: r.environment, key: r.key, category: r.category, ciphertext: r.ciphertext, hlc: r.hlc,
                  origin: r.origin, deleted: r.deleted, createdAt: r.createdAt, updatedAt: r.updatedAt)
    }
}
