import Foundation
import SecureConfCrypto
import SecureConfJSON
import SecureConfStore
import Synchronization

/// Users, their login tokens and service tokens (`OSC_AUTH_MODE=tokens`).
///
/// Every record is an entry of the reserved environment `EntryNames.identityEnvironment`
/// (no client can name it; listings, statistics, backups and change events leave it out),
/// sealed with Fernet under a key derived from a secret every node shares, so that records replicate,
/// converge and are repaired exactly as entries are, on every node of a replica cluster. A
/// record holds hashes and metadata only: a user's scrypt password hash, a token's SHA-256.
///
/// A token is `sct_<id>_<secret>`: the id names its record, the secret (32 random bytes) is
/// shown once and stored as its SHA-256. Verifying one is a dictionary lookup and a hash;
/// its record (and its user's) is re-read at most every `recheckInterval`, so a revocation
/// made on another node is enforced here once it has replicated and that interval passed.
public final class IdentityService: Sendable {
    public struct Settings: Sendable {
        /// Lifetime of a login token (`OSC_TOKEN_TTL`).
        public var tokenLifetimeSeconds: Int
        /// How long a verified token is trusted before its records are read again.
        public var recheckInterval: Duration
        /// Verified tokens kept in memory.
        public var cacheCapacity: Int
        public var passwordParameters: PasswordHash.Parameters

        public init(
            tokenLifetimeSeconds: Int = 3600,
            recheckInterval: Duration = .milliseconds(400),
            cacheCapacity: Int = 100_000,
            passwordParameters: PasswordHash.Parameters = .init()
        ) {
            self.tokenLifetimeSeconds = tokenLifetimeSeconds
            self.recheckInterval = recheckInterval
            self.cacheCapacity = cacheCapacity
            self.passwordParameters = passwordParameters
        }
    }

    public let settings: Settings
    private let storage: any ConfigStorage
    private let keys: DerivedKeyCache
    private let limiter: AuthFailureLimiter
    private let sealKey: DerivedKey
    /// Whether this node may trust what it holds (false until a returning cluster node has
    /// caught up with a peer: it could hold a revoked token's record).
    private let ready: @Sendable () -> Bool
    /// Called after each committed write (wakes replication, so a revocation ships at once).
    private let committed: @Sendable () -> Void
    private let cache = Mutex<[String: Verified]>([:])
    /// Bumped by every revocation here: a verification that read its records before one is
    /// not cached after it.
    private let revocations = Atomic<UInt64>(0)
    /// A hash of a password nobody has, checked for unknown users so that a login costs the
    /// same whether or not the user exists.
    private let decoyHash: String

    struct Verified {
        var principal: Principal
        var secretHash: [UInt8]
        var expiresAt: Int64?
        var checkedAt: ContinuousClock.Instant
    }

    public init(
        storage: any ConfigStorage,
        keys: DerivedKeyCache,
        limiter: AuthFailureLimiter,
        sealSecret: [UInt8],
        settings: Settings = .init(),
        ready: @escaping @Sendable () -> Bool = { true },
        committed: @escaping @Sendable () -> Void = {}
    ) {
        self.committed = committed
        self.storage = storage
        self.keys = keys
        self.limiter = limiter
        self.settings = settings
        self.ready = ready
        var bytes = OpenSSL.hmacSHA256(key: sealSecret, data: Array("secureconf identity records v1".utf8))
        sealKey = DerivedKey(consuming: &bytes)
        decoyHash = PasswordHash.make(Base64URL.encode(OpenSSL.randomBytes(24)), parameters: settings.passwordParameters)
    }

    // MARK: Records

    public struct User: Sendable, Equatable {
        /// Random, made with the user: a login token names it, so a token outlives neither its
        /// user nor a later user of the same name.
        public var id: String
        public var name: String
        public var role: Role
        public var tenant: String
        /// Given policies (nil: the role's).
        public var policies: Policy?
        public var createdAt: String
        var passwordHash: String

        public var effectivePolicy: Policy { policies ?? role.policy }

        public var json: JSONValue {
            .object([
                ("username", .string(name)), ("role", .string(role.rawValue)), ("tenant", .string(tenant)),
                ("policies", policies?.json ?? .null), ("created_at", .string(createdAt)),
            ])
        }
    }

    public struct Token: Sendable, Equatable {
        public enum Kind: String, Sendable { case login, service }
        public var id: String
        public var name: String
        public var kind: Kind
        /// The user a login token belongs to, and that user's id.
        public var user: String?
        public var userID: String?
        public var role: Role
        public var tenant: String
        public var policies: Policy?
        public var createdAt: String
        public var createdBy: String
        /// Seconds since 1970; nil: no expiry.
        public var expiresAt: Int64?
        var secretHash: String

        public var subject: String { kind == .login ? "user:\(user ?? "")" : "token:\(name)" }

        public func json(lastUsed: String?) -> JSONValue {
            .object([
                ("id", .string(id)), ("name", .string(name)), ("subject", .string(subject)), ("role", .string(role.rawValue)),
                ("tenant", .string(tenant)), ("policies", policies?.json ?? .null), ("created_at", .string(createdAt)),
                ("created_by", .string(createdBy)),
                ("expires_at", expiresAt.map { .string(Timestamp.iso8601(micros: $0 * 1_000_000)) } ?? .null),
                ("last_used_at", lastUsed.map(JSONValue.string) ?? .null),
            ])
        }
    }

    static func userKey(_ name: String) -> String { "user." + name }
    static func tokenKey(_ id: String) -> String { "token." + id }

    private func name(_ key: String) -> EntryName { EntryName(environment: EntryNames.identityEnvironment, key: key) }

    private func seal(_ value: JSONValue) -> String { Fernet.encrypt(JSONWriter.encode(value), key: sealKey) }

    private func unseal(_ entry: ConfigEntry) -> JSONValue? {
        guard let bytes = try? Fernet.decrypt(entry.ciphertext, key: sealKey) else { return nil }
        return try? JSONParser.parse(bytes, maxDepth: 16)
    }

    private static func policyJSON(_ p: Policy?) -> JSONValue { p?.json ?? .null }

    private func user(from value: JSONValue) -> User? {
        guard value["type"]?.stringValue == "user", let name = value["name"]?.stringValue,
            let role = value["role"]?.stringValue.flatMap(Role.init(rawValue:)), let tenant = value["tenant"]?.stringValue,
            let hash = value["password"]?.stringValue
        else { return nil }
        let policies = value["policies"].flatMap { $0.isNull ? nil : try? Policy.parse($0) }
        return User(
            id: value["id"]?.stringValue ?? "",
            name: name,
            role: role,
            tenant: tenant,
            policies: policies,
            createdAt: value["created_at"]?.stringValue ?? "",
            passwordHash: hash
        )
    }

    private func userJSON(_ u: User) -> JSONValue {
        .object([
            ("type", .string("user")), ("id", .string(u.id)), ("name", .string(u.name)), ("role", .string(u.role.rawValue)),
            ("tenant", .string(u.tenant)),
            ("policies", Self.policyJSON(u.policies)), ("password", .string(u.passwordHash)), ("created_at", .string(u.createdAt)),
        ])
    }

    private func token(from value: JSONValue) -> Token? {
        guard value["type"]?.stringValue == "token", let id = value["id"]?.stringValue, let name = value["name"]?.stringValue,
            let kind = value["kind"]?.stringValue.flatMap(Token.Kind.init(rawValue:)),
            let role = value["role"]?.stringValue.flatMap(Role.init(rawValue:)), let tenant = value["tenant"]?.stringValue,
            let hash = value["hash"]?.stringValue
        else { return nil }
        var expires: Int64?
        if case .number(let text)? = value["expires_at"] { expires = Int64(text) }
        return Token(
            id: id,
            name: name,
            kind: kind,
            user: value["user"]?.stringValue,
            userID: value["user_id"]?.stringValue,
            role: role,
            tenant: tenant,
            policies: value["policies"].flatMap { $0.isNull ? nil : try? Policy.parse($0) },
            createdAt: value["created_at"]?.stringValue ?? "",
            createdBy: value["created_by"]?.stringValue ?? "",
            expiresAt: expires,
            secretHash: hash
        )
    }

    private func tokenJSON(_ t: Token) -> JSONValue {
        .object([
            ("type", .string("token")), ("id", .string(t.id)), ("name", .string(t.name)), ("kind", .string(t.kind.rawValue)),
            ("user", t.user.map(JSONValue.string) ?? .null), ("user_id", t.userID.map(JSONValue.string) ?? .null),
            ("role", .string(t.role.rawValue)), ("tenant", .string(t.tenant)),
            ("policies", Self.policyJSON(t.policies)), ("hash", .string(t.secretHash)), ("created_at", .string(t.createdAt)),
            ("created_by", .string(t.createdBy)), ("expires_at", t.expiresAt.map { .number(String($0)) } ?? .null),
        ])
    }

    private func records(prefix: String) async throws -> [JSONValue] {
        try await storage.all(tenant: Revision.defaultTenant, environment: EntryNames.identityEnvironment)
            .filter { $0.key.hasPrefix(prefix) }.compactMap(unseal)
    }

    private func record(_ key: String) async throws -> JSONValue? {
        guard let entry = try await storage.entry(name(key)) else { return nil }
        return unseal(entry)
    }

    private func write(_ key: String, _ value: JSONValue, caller: Caller?, status: Int, exists: Bool) async throws {
        let audit = caller?.audit.recordForWrite(status: status)
        if exists {
            _ = try await storage.update(name(key), category: nil, ciphertext: seal(value), actor: nil, audit: audit) { _ in true }
        } else {
            _ = try await storage.create(name(key), category: nil, ciphertext: seal(value), actor: nil, audit: audit)
        }
        caller?.audit.written()
        committed()
    }

    private func remove(_ key: String, caller: Caller?, status: Int) async throws {
        let audit = caller?.audit.recordForWrite(status: status)
        try await storage.delete(name(key), actor: nil, audit: audit) { _ in true }
        caller?.audit.written()
        committed()
    }

    // MARK: Names

    /// User and token names: 1–64 of letters, digits, `.`, `_`, `-`, `@`.
    public static func checkName(_ name: String, field: String) throws(ServiceError) {
        let allowed = name.unicodeScalars.allSatisfy { s in
            (s.value < 128) && (CharacterSet.alphanumerics.contains(s) || "._-@".unicodeScalars.contains(s))
        }
        guard (1...64).contains(name.unicodeScalars.count), allowed else {
            throw ServiceError.unprocessable("\(field) must be 1 to 64 letters, digits, '.', '_', '-' or '@'")
        }
    }

    /// The tenant a new user or token goes into: the one asked for (a global administrator:
    /// any; a tenant's administrator: its own), else the creator's.
    public static func checkTenant(_ tenant: String?, by principal: Principal?) throws(ServiceError) -> String {
        let own = principal?.tenant ?? Revision.defaultTenant
        guard let tenant, !tenant.isEmpty else { return own }
        if let problem = TenantNames.problem(tenant) { throw ServiceError.unprocessable(problem) }
        guard tenant == own || principal?.isGlobalAdmin ?? true else {
            throw ServiceError(.forbidden, "\(principal?.subject ?? "") administers tenant '\(own)' only")
        }
        return tenant
    }

    /// Whether `principal` may see and change what belongs to `tenant` (nil: the command line).
    static func manages(_ principal: Principal?, _ tenant: String) -> Bool {
        guard let principal else { return true }
        return principal.isGlobalAdmin || principal.tenant == tenant
    }

    static func checkPassword(_ password: String) throws(ServiceError) {
        guard (8...1024).contains(password.utf8.count) else { throw ServiceError.unprocessable("password must be 8 to 1024 bytes long") }
    }

    // MARK: Users

    /// Creates a user (400 when the name is taken).
    @discardableResult
    public func addUser(name: String, password: String, role: Role, tenant: String?, policies: Policy?, caller: Caller?) async throws -> User {
        try Self.checkName(name, field: "username")
        try Self.checkPassword(password)
        let tenant = try Self.checkTenant(tenant, by: caller?.principal)
        if try await record(Self.userKey(name)) != nil { throw ServiceError(.alreadyExists, "User '\(name)' already exists") }
        let parameters = settings.passwordParameters
        let hash = try await keys.runBounded { PasswordHash.make(password, parameters: parameters) }
        let user = User(
            id: Hex.encode(OpenSSL.randomBytes(8)),
            name: name,
            role: role,
            tenant: tenant,
            policies: policies,
            createdAt: Timestamp.iso8601(micros: AuditClock.nowMicros()),
            passwordHash: hash
        )
        do {
            try await write(Self.userKey(name), userJSON(user), caller: caller, status: 201, exists: false)
        } catch let error as StoreError {
            if case .alreadyExists = error { throw ServiceError(.alreadyExists, "User '\(name)' already exists") }
            throw error
        }
        return user
    }

    /// The users `principal` administers (all of them for a global administrator).
    public func users(visibleTo principal: Principal?) async throws -> [User] {
        try await records(prefix: "user.").compactMap(user(from:)).filter { Self.manages(principal, $0.tenant) }.sorted { $0.name < $1.name }
    }

    public func user(named name: String) async throws -> User? {
        try await record(Self.userKey(name)).flatMap(user(from:))
    }

    /// A user `principal` administers; another tenant's is not found.
    private func managedUser(_ name: String, by principal: Principal?) async throws -> User {
        guard let user = try await user(named: name), Self.manages(principal, user.tenant) else {
            throw ServiceError(.notFound, "User '\(name.prefix(64))' not found")
        }
        return user
    }

    /// Changes a user's role, policies (`.some(nil)` back to the role's) or password.
    public func updateUser(name: String, role: Role?, policies: Policy??, password: String?, caller: Caller?) async throws -> User {
        var user = try await managedUser(name, by: caller?.principal)
        if let role { user.role = role }
        if let policies { user.policies = policies }
        if let password {
            try Self.checkPassword(password)
            let parameters = settings.passwordParameters
            user.passwordHash = try await keys.runBounded { PasswordHash.make(password, parameters: parameters) }
        }
        try await write(Self.userKey(name), userJSON(user), caller: caller, status: 200, exists: true)
        // A new password ends every session of the old one.
        if password != nil { try await revokeLoginTokens(of: user) }
        forget { $0.principal.subject == "user:\(name)" }
        return user
    }

    /// Deletes the records of `user`'s expired login tokens.
    private func purgeExpiredLoginTokens(of user: User) async throws {
        let now = Int64(Date().timeIntervalSince1970)
        for token in try await records(prefix: "token.").compactMap(token(from:))
        where token.kind == .login && token.user == user.name && (token.expiresAt ?? Int64.max) <= now {
            try await remove(Self.tokenKey(token.id), caller: nil, status: 200)
        }
    }

    /// Deletes the records of `user`'s login tokens (replicated like any delete).
    private func revokeLoginTokens(of user: User) async throws {
        for token in try await records(prefix: "token.").compactMap(token(from:)) where token.kind == .login && token.user == user.name {
            try await remove(Self.tokenKey(token.id), caller: nil, status: 200)
        }
    }

    /// Deletes a user; its login tokens stop working at once (they name a user that is gone).
    public func deleteUser(name: String, caller: Caller?) async throws {
        let user = try await managedUser(name, by: caller?.principal)
        try await remove(Self.userKey(name), caller: caller, status: 200)
        try await revokeLoginTokens(of: user)
        forget { $0.principal.subject == "user:\(name)" }
    }

    // MARK: Tokens

    /// Checks `password` (through the failed-attempt limiter, on the key-derivation threads)
    /// and issues a login token.
    public func login(username: String, password: String, caller: Caller) async throws -> (token: String, expiresIn: Int, user: User) {
        // A token this node would not yet accept is not issued either.
        try ensureReady()
        try limiter.acquire(caller.client)
        let found = try await user(named: username)
        let hash = found?.passwordHash ?? decoyHash
        let matches: Bool
        do {
            matches = try await keys.runBounded { PasswordHash.verify(password, against: hash) }
        } catch {
            limiter.refund(caller.client)
            throw error
        }
        guard matches, let user = found else {
            caller.audit.actor("user:" + String(username.prefix(64)))
            throw ServiceError(.wrongPassword, "Invalid username or password")
        }
        limiter.refund(caller.client)
        caller.audit.actor("user:" + user.name)
        caller.audit.tenant(user.tenant)
        let lifetime = settings.tokenLifetimeSeconds
        let (token, secret) = newToken(
            name: "login",
            kind: .login,
            user: user,
            role: user.role,
            tenant: user.tenant,
            policies: nil,
            createdBy: "user:" + user.name,
            expiresAt: Int64(Date().timeIntervalSince1970) + Int64(lifetime)
        )
        try await write(Self.tokenKey(token.id), tokenJSON(token), caller: caller, status: 200, exists: false)
        // Each login leaves a record: the user's expired ones go as it logs in again.
        try await purgeExpiredLoginTokens(of: user)
        return (secret, lifetime, user)
    }

    /// Creates a named service token; its secret is in the returned string only.
    public func createServiceToken(
        name: String,
        tenant: String? = nil,
        role: Role,
        policies: Policy?,
        expiresInSeconds: Int?,
        by principal: Principal,
        caller: Caller
    ) async throws -> (token: String, record: Token) {
        try Self.checkName(name, field: "name")
        if let expiresInSeconds, !(60...(10 * 365 * 86400)).contains(expiresInSeconds) {
            throw ServiceError.unprocessable("expires_in must be 60 to 315360000 seconds")
        }
        let tenant = try Self.checkTenant(tenant, by: principal)
        let expiresAt = expiresInSeconds.map { Int64(Date().timeIntervalSince1970) + Int64($0) }
        let (token, secret) = newToken(
            name: name,
            kind: .service,
            user: nil,
            role: role,
            tenant: tenant,
            policies: policies,
            createdBy: principal.subject,
            expiresAt: expiresAt
        )
        try await write(Self.tokenKey(token.id), tokenJSON(token), caller: caller, status: 201, exists: false)
        return (secret, token)
    }

    /// The service tokens `principal` administers.
    public func serviceTokens(visibleTo principal: Principal?) async throws -> [Token] {
        try await records(prefix: "token.").compactMap(token(from:)).filter { $0.kind == .service && Self.manages(principal, $0.tenant) }
            .sorted { $0.createdAt < $1.createdAt }
    }

    /// Revokes a token by id (404 when there is none, or it is another tenant's).
    public func revoke(tokenID: String, caller: Caller?) async throws {
        guard Self.isTokenID(tokenID), let token = try await record(Self.tokenKey(tokenID)).flatMap(token(from:)),
            Self.manages(caller?.principal, token.tenant) || caller?.principal?.tokenID == tokenID
        else {
            throw ServiceError(.notFound, "Token '\(tokenID.prefix(40))' not found")
        }
        try await remove(Self.tokenKey(tokenID), caller: caller, status: 200)
        forget { $0.principal.tokenID == tokenID }
    }

    private func newToken(
        name: String,
        kind: Token.Kind,
        user: User?,
        role: Role,
        tenant: String,
        policies: Policy?,
        createdBy: String,
        expiresAt: Int64?
    ) -> (Token, String) {
        let id = Hex.encode(OpenSSL.randomBytes(8))
        let secret = Base64URL.encode(OpenSSL.randomBytes(32))
        let token = Token(
            id: id,
            name: name,
            kind: kind,
            user: user?.name,
            userID: user?.id,
            role: role,
            tenant: tenant,
            policies: policies,
            createdAt: Timestamp.iso8601(micros: AuditClock.nowMicros()),
            createdBy: createdBy,
            expiresAt: expiresAt,
            secretHash: Hex.encode(OpenSSL.sha256(Array(secret.utf8)))
        )
        return (token, "sct_\(id)_\(secret)")
    }

    static func isTokenID(_ s: String) -> Bool {
        s.utf8.count == 16 && s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    // MARK: Verification

    private let lastUse = Mutex<[String: Int64]>([:])

    /// When this node last saw each token used (microseconds), since it started.
    public func lastUsed(_ tokenID: String) -> String? {
        lastUse.withLock { $0[tokenID] }.map(Timestamp.iso8601(micros:))
    }

    /// A bearer token taken apart: its id and the hash of its secret.
    public struct Bearer: Sendable {
        let id: String
        let secretHash: [UInt8]
    }

    /// 503 while this cluster node has not caught up with a peer since it started: it may
    /// hold a revoked token's record, so it takes no token (and issues none) until it has.
    public func ensureReady() throws(ServiceError) {
        guard ready() else {
            throw ServiceError(.identitySyncing, "This node is catching up with the cluster before it accepts tokens; retry shortly", retryAfter: 1)
        }
    }

    /// Parses a bearer token (401 when it is not one of ours).
    public static func parse(bearer: String) throws(ServiceError) -> Bearer {
        let parts = bearer.split(separator: "_", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "sct", Self.isTokenID(String(parts[1])), (40...48).contains(parts[2].utf8.count) else {
            throw Self.invalidToken
        }
        return Bearer(id: String(parts[1]), secretHash: OpenSSL.sha256(Array(parts[2].utf8)))
    }

    /// The principal of a token verified within `recheckInterval`, without suspending (the
    /// warm path of every request); nil when its records must be read (`verify`).
    public func cachedPrincipal(_ bearer: Bearer) throws(ServiceError) -> Principal? {
        try ensureReady()
        guard let cached = cache.withLock({ $0[bearer.id] }), ContinuousClock.now - cached.checkedAt < settings.recheckInterval else { return nil }
        guard OpenSSL.constantTimeEquals(cached.secretHash, bearer.secretHash) else { throw Self.invalidToken }
        if let expires = cached.expiresAt, expires <= Int64(Date().timeIntervalSince1970) { throw Self.invalidToken }
        noteUse(bearer.id)
        return cached.principal
    }

    /// The principal a bearer token stands for; 401 for anything else, 503 while a returning
    /// cluster node has not caught up.
    public func verify(bearer text: String) async throws -> Principal {
        let bearer = try Self.parse(bearer: text)
        if let principal = try cachedPrincipal(bearer) { return principal }
        return try await verifyFromRecords(bearer)
    }

    /// Reads the token's record (and its user's), checks them, and caches the principal.
    public func verifyFromRecords(_ bearer: Bearer) async throws -> Principal {
        let (id, hash) = (bearer.id, bearer.secretHash)
        let generation = revocations.load(ordering: .sequentiallyConsistent)
        let now = ContinuousClock.now
        let seconds = Int64(Date().timeIntervalSince1970)
        guard let token = try await record(Self.tokenKey(id)).flatMap(token(from:)), let stored = Hex.decode(token.secretHash),
            OpenSSL.constantTimeEquals(stored, hash)
        else {
            cache.withLock { _ = $0.removeValue(forKey: id) }
            throw Self.invalidToken
        }
        if let expires = token.expiresAt, expires <= seconds { throw Self.invalidToken }
        var principal = Principal(
            subject: token.subject,
            role: token.role,
            tenant: token.tenant,
            policy: token.policies ?? token.role.policy,
            tokenID: id
        )
        if token.kind == .login {
            guard let name = token.user, let user = try await user(named: name), user.id == (token.userID ?? user.id) else {
                throw Self.invalidToken
            }
            principal.role = user.role
            principal.tenant = user.tenant
            principal.policy = user.effectivePolicy
        }
        cache.withLock { c in
            guard revocations.load(ordering: .sequentiallyConsistent) == generation else { return }
            if c.count >= settings.cacheCapacity { c.removeAll(keepingCapacity: true) }
            c[id] = Verified(principal: principal, secretHash: hash, expiresAt: token.expiresAt, checkedAt: now)
        }
        noteUse(id)
        return principal
    }

    /// Whether the token `id` still stands (not revoked or expired; its user, for a login
    /// token, still the one it was issued to): long-lived streams ask it as they go.
    public func isLive(tokenID id: String) async -> Bool {
        guard let token = try? await record(Self.tokenKey(id)).flatMap(token(from:)) else { return false }
        if let expires = token.expiresAt, expires <= Int64(Date().timeIntervalSince1970) { return false }
        if token.kind == .login {
            guard let name = token.user, let user = try? await user(named: name), user.id == (token.userID ?? user.id) else { return false }
        }
        return true
    }

    private func noteUse(_ id: String) {
        let micros = AuditClock.nowMicros()
        lastUse.withLock { uses in
            if uses.count >= settings.cacheCapacity { uses.removeAll(keepingCapacity: true) }
            uses[id] = micros
        }
    }

    private func forget(_ matching: (Verified) -> Bool) {
        revocations.add(1, ordering: .sequentiallyConsistent)
        cache.withLock { c in c = c.filter { !matching($0.value) } }
    }

    static let invalidToken = ServiceError(.invalidToken, "Invalid or expired token")
}
