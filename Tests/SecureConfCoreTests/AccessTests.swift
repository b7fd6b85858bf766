import Foundation
import Logging
import SecureConfCrypto
import SecureConfJSON
import SecureConfStore
import Testing

@testable import SecureConfCore

@Suite struct PolicyTests {
    @Test func globsMatchStarsQuestionMarksAndLiterals() {
        #expect(Glob.matches("*", "anything"))
        #expect(Glob.matches("db.*", "db.password") && !Glob.matches("db.*", "dbx"))
        #expect(Glob.matches("prod-?", "prod-1") && !Glob.matches("prod-?", "prod-12"))
        #expect(Glob.matches("*-eu-*", "api-eu-west") && !Glob.matches("*-eu-*", "api-us-west"))
        #expect(Glob.matches("a*b*c", "aXbYc") && !Glob.matches("a*b*c", "aXbY"))
        #expect(!Glob.matches("staging", "staging2") && Glob.matches("", ""))
    }

    @Test func rolesAreNamedDefaultPolicies() {
        let reader = Role.reader.policy
        #expect(reader.allows(.read, environment: "prod", key: "k") && reader.allows(.events, environment: nil, key: nil))
        #expect(!reader.allows(.write, environment: "prod", key: "k") && !reader.allows(.audit, environment: nil, key: nil))
        let writer = Role.writer.policy
        #expect(writer.allows(.rollback, environment: "x", key: "y") && !writer.allows(.restore, environment: "x", key: nil))
        #expect(Role.admin.policy.allows(.admin, environment: nil, key: nil))
    }

    @Test func aScopedRuleCoversOnlyItsEnvironmentsAndKeys() throws {
        let policy = try Policy.parse(
            try JSONParser.parse(Array(#"[{"environments":["staging","dev-*"],"keys":["db.*"],"capabilities":["read","write"]}]"#.utf8))
        )
        #expect(policy.allows(.write, environment: "staging", key: "db.url"))
        #expect(policy.allows(.read, environment: "dev-anna", key: "db.url"))
        #expect(!policy.allows(.write, environment: "production", key: "db.url"))
        #expect(!policy.allows(.write, environment: "staging", key: "api.token"))
        #expect(!policy.allows(.delete, environment: "staging", key: "db.url"))
        #expect(policy.allows(.read, environment: nil, key: nil), "a listing across environments is allowed, then filtered")
    }

    @Test func malformedPoliciesAreRefusedWithADetail() {
        for text in [
            #"{"capabilities":["read"]}"#, #"[{"capabilities":[]}]"#, #"[{"capabilities":["fly"]}]"#,
            #"[{"capabilities":["read"],"environments":[]}]"#, #"[{"capabilities":["read"],"environments":[""]}]"#,
            #"[{"capabilities":["read"],"paths":["*"]}]"#, #"[5]"#,
        ] {
            #expect(throws: ServiceError.self, "\(text)") { _ = try Policy.parse(try JSONParser.parse(Array(text.utf8))) }
        }
        let many = "[" + Array(repeating: #"{"capabilities":["read"]}"#, count: PolicyRule.maxRules + 1).joined(separator: ",") + "]"
        #expect(throws: ServiceError.self) { _ = try Policy.parse(try JSONParser.parse(Array(many.utf8))) }
    }

    @Test func aScopedAdminRuleMakesNoAdministratorAndGlobsAreBounded() throws {
        let scoped = try Policy.parse(try JSONParser.parse(Array(#"[{"environments":["dev"],"capabilities":["admin"]}]"#.utf8)))
        #expect(scoped.allows(.write, environment: "dev", key: "k"), "admin in its scope grants the data capabilities there")
        #expect(!scoped.allowsEverywhere(.admin) && !scoped.allowsEverywhere(.audit))
        #expect(!Principal(subject: "user:x", role: .reader, tenant: "default", policy: scoped).isAdmin)
        #expect(Role.admin.policy.allowsEverywhere(.audit))
        let stars = #"[{"keys":["\#(String(repeating: "*a", count: PolicyRule.maxStars + 1))"],"capabilities":["read"]}]"#
        #expect(throws: ServiceError.self) { _ = try Policy.parse(try JSONParser.parse(Array(stars.utf8))) }
        let rule = #"{"keys":["\#(String(repeating: "k", count: 200))"],"capabilities":["read"]}"#
        let long = "[" + Array(repeating: rule, count: 50).joined(separator: ",") + "]"
        #expect(throws: ServiceError.self, "over the policy's pattern characters") { _ = try Policy.parse(try JSONParser.parse(Array(long.utf8))) }
    }

    @Test func theAuthorizerNamesTheMissingCapabilityAndScope() throws {
        let caller = Caller(
            userKey: nil,
            client: "c",
            audit: AuditNote(),
            logger: Logger(label: "t"),
            principal: Principal(subject: "user:walt", role: .writer, tenant: "default", policy: Role.reader.policy)
        )
        do {
            try PolicyAuthorizer().authorize(caller, .update, tenant: "default", environment: "production", key: "db")
            Issue.record("a reader may not update")
        } catch {
            #expect(error.kind == .forbidden)
            #expect(error.detail == "user:walt lacks the 'write' capability on environment 'production', key 'db'")
        }
        try PolicyAuthorizer().authorize(caller, .read, tenant: "default", environment: "production", key: "db")
        var apikeyMode = caller
        apikeyMode.principal = nil
        try PolicyAuthorizer().authorize(apikeyMode, .restore, tenant: "default", environment: "production", key: nil)
    }
}

@Suite struct PasswordHashTests {
    @Test func aHashVerifiesItsPasswordOnly() {
        let fast = PasswordHash.Parameters(log2N: 10, r: 8, p: 1)
        let hash = PasswordHash.make("correct horse", parameters: fast)
        #expect(hash.hasPrefix("scrypt$10$8$1$") && !hash.contains("correct"))
        #expect(PasswordHash.verify("correct horse", against: hash))
        #expect(!PasswordHash.verify("correct horsf", against: hash))
        #expect(PasswordHash.make("correct horse", parameters: fast) != hash, "a fresh salt each time")
    }

    @Test func malformedOrUnboundedHashesNeverVerify() {
        let hash = PasswordHash.make("pw-123456", parameters: .init(log2N: 10))
        var parts = hash.split(separator: "$").map(String.init)
        parts[1] = "40"  // 2^40: a tampered record must not make a node allocate terabytes
        #expect(!PasswordHash.verify("pw-123456", against: parts.joined(separator: "$")))
        for bad in ["", "scrypt", "bcrypt$10$8$1$aa$bb", "scrypt$10$8$1$!!$??", "scrypt$x$8$1$\(parts[4])$\(parts[5])"] {
            #expect(!PasswordHash.verify("pw-123456", against: bad))
        }
    }
}

@Suite struct IdentityServiceTests {
    func fixture(lifetime: Int = 3600, recheck: Duration = .milliseconds(400)) throws -> (IdentityService, ConfigStore, AuthFailureLimiter) {
        let directory = NSTemporaryDirectory() + "identity-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let store = try ConfigStore(configuration: .init(path: directory + "/data.db", nodeID: "n:1"))
        let keys = DerivedKeyCache(salt: OpenSSL.randomBytes(32), configuration: .init(iterations: 1_000))
        let limiter = AuthFailureLimiter(limit: 3, windowSeconds: 60)
        let identity = IdentityService(
            storage: store,
            keys: keys,
            limiter: limiter,
            sealSecret: OpenSSL.randomBytes(32),
            settings: .init(tokenLifetimeSeconds: lifetime, recheckInterval: recheck, passwordParameters: .init(log2N: 10))
        )
        return (identity, store, limiter)
    }

    func caller(_ client: String = "10.0.0.1") -> Caller { Caller(userKey: nil, client: client, audit: AuditNote(), logger: Logger(label: "t")) }

    @Test func loginIssuesATokenThatVerifiesAndRecordsHoldNoSecret() async throws {
        let (identity, store, _) = try fixture()
        try await identity.addUser(name: "alice", password: "alice-pass", role: .writer, tenant: nil, policies: nil, caller: nil)
        let issued = try await identity.login(username: "alice", password: "alice-pass", caller: caller())
        let principal = try await identity.verify(bearer: issued.token)
        #expect(principal.subject == "user:alice" && principal.role == .writer && principal.tokenID != nil)
        let raw = try await store.all(tenant: Revision.defaultTenant, environment: EntryNames.identityEnvironment)
        #expect(raw.count == 2)
        for entry in raw {
            #expect(!entry.ciphertext.contains("alice-pass") && !entry.ciphertext.contains(issued.token))
        }
        #expect(try await store.all(tenant: Revision.defaultTenant).isEmpty, "users and tokens are in no listing")
    }

    @Test func wrongPasswordsAndUnknownUsersAreRefusedAlikeThenLimited() async throws {
        let (identity, _, _) = try fixture()
        try await identity.addUser(name: "bob", password: "bob-pass-1", role: .reader, tenant: nil, policies: nil, caller: nil)
        for name in ["bob", "nobody", "bob"] {
            await #expect {
                _ = try await identity.login(username: name, password: "wrong-pass", caller: caller())
            } throws: { ($0 as? ServiceError)?.detail == "Invalid username or password" }
        }
        await #expect {
            _ = try await identity.login(username: "bob", password: "bob-pass-1", caller: caller())
        } throws: { ($0 as? ServiceError)?.kind == .authRateLimited }
        _ = try await identity.login(username: "bob", password: "bob-pass-1", caller: caller("10.0.0.2"))
    }

    @Test func tamperedExpiredAndRevokedTokensAreRefused() async throws {
        let (identity, _, _) = try fixture(recheck: .zero)
        let admin = Principal(subject: "user:root", role: .admin, tenant: "default", policy: Role.admin.policy)
        let (token, record) = try await identity.createServiceToken(
            name: "ci",
            role: .reader,
            policies: nil,
            expiresInSeconds: nil,
            by: admin,
            caller: caller()
        )
        #expect(try await identity.verify(bearer: token).subject == "token:ci")
        var tampered = Array(token)
        tampered[tampered.count - 2] = tampered[tampered.count - 2] == "A" ? "B" : "A"
        for bad in [String(tampered), "sct_zz_" + String(repeating: "a", count: 43), "Bearer", "", token + "x"] {
            await #expect(throws: ServiceError.self, "\(bad.prefix(12))") { _ = try await identity.verify(bearer: bad) }
        }
        try await identity.revoke(tokenID: record.id, caller: nil)
        await #expect(throws: ServiceError.self) { _ = try await identity.verify(bearer: token) }
        await #expect(throws: ServiceError.self) { try await identity.revoke(tokenID: record.id, caller: nil) }
    }

    @Test func aLoginTokenEndsWithItsLifetimeAndItsUser() async throws {
        // Three seconds: a first check right after a login on a loaded machine is well within it.
        let (identity, store, _) = try fixture(lifetime: 3, recheck: .zero)
        try await identity.addUser(name: "eve", password: "eve-pass-1", role: .reader, tenant: nil, policies: nil, caller: nil)
        let first = try await identity.login(username: "eve", password: "eve-pass-1", caller: caller())
        #expect(try await identity.verify(bearer: first.token).subject == "user:eve")
        try await Task.sleep(for: .milliseconds(4100))
        await #expect(throws: ServiceError.self, "expired") { _ = try await identity.verify(bearer: first.token) }
        let second = try await identity.login(username: "eve", password: "eve-pass-1", caller: caller())
        let tokens = try await store.all(tenant: Revision.defaultTenant, environment: EntryNames.identityEnvironment).filter {
            $0.key.hasPrefix("token.")
        }
        #expect(tokens.count == 1, "the expired login token's record went as the user logged in again")
        try await identity.deleteUser(name: "eve", caller: nil)
        await #expect(throws: ServiceError.self, "its user is gone") { _ = try await identity.verify(bearer: second.token) }
    }

    @Test func usersAndTokensBelongToATenantThatOnlyItsAdministratorsManage() async throws {
        let (identity, _, _) = try fixture()
        let acmeAdmin = try await identity.addUser(name: "ann", password: "tenant-pass", role: .admin, tenant: "acme", policies: nil, caller: nil)
        #expect(acmeAdmin.tenant == "acme")
        await #expect(throws: ServiceError.self, "not a tenant name") {
            try await identity.addUser(name: "t", password: "tenant-pass", role: .reader, tenant: "Not Valid", policies: nil, caller: nil)
        }
        let ann = Principal(subject: "user:ann", role: .admin, tenant: "acme", policy: Role.admin.policy)
        let asAnn = Caller(userKey: nil, client: "c", audit: AuditNote(), logger: Logger(label: "t"), principal: ann)
        let made = try await identity.addUser(name: "bo", password: "tenant-pass", role: .reader, tenant: nil, policies: nil, caller: asAnn)
        #expect(made.tenant == "acme", "a tenant administrator's users are its tenant's")
        await #expect {
            try await identity.addUser(name: "cy", password: "tenant-pass", role: .reader, tenant: "default", policies: nil, caller: asAnn)
        } throws: { ($0 as? ServiceError)?.kind == .forbidden }
        try await identity.addUser(name: "dee", password: "tenant-pass", role: .reader, tenant: nil, policies: nil, caller: nil)
        #expect(try await identity.users(visibleTo: ann).map(\.name) == ["ann", "bo"])
        #expect(try await identity.users(visibleTo: nil).count == 3)
        await #expect {
            try await identity.deleteUser(name: "dee", caller: asAnn)
        } throws: { ($0 as? ServiceError)?.kind == .notFound }
    }
}
