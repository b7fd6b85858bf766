import SecureConfJSON
import SecureConfStore

/// What a rule may allow.
public enum Capability: String, Sendable, CaseIterable, Comparable {
    case read, list, write, delete, history, rollback, restore, events, audit, admin

    public static func < (a: Capability, b: Capability) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// The capability an operation needs.
    public static func needed(for operation: ConfigOperation) -> Capability {
        switch operation {
        case .read, .readAt, .readVersion, .backup: .read
        case .list, .stats, .distribution: .list
        case .create, .update, .importBackup: .write
        case .delete: .delete
        case .versions, .diff: .history
        case .rollback: .rollback
        case .restore, .rekey: .restore
        case .subscribe: .events
        }
    }
}

/// `{"environments": [glob], "keys": [glob], "capabilities": [...]}`; globs take `*` (any
/// run of characters) and `?` (one character); absent lists mean `["*"]`.
public struct PolicyRule: Sendable, Equatable {
    public var environments: [String]
    public var keys: [String]
    public var capabilities: Set<Capability>

    public init(environments: [String] = ["*"], keys: [String] = ["*"], capabilities: Set<Capability>) {
        self.environments = environments
        self.keys = keys
        self.capabilities = capabilities
    }

    func covers(_ capability: Capability, environment: String?, key: String?) -> Bool {
        guard capabilities.contains(capability) || capabilities.contains(.admin) else { return false }
        if let environment, !environments.contains(where: { Glob.matches($0, environment) }) { return false }
        if let key, !keys.contains(where: { Glob.matches($0, key) }) { return false }
        return true
    }

    public var json: JSONValue {
        .object([
            ("environments", .array(environments.map(JSONValue.string))), ("keys", .array(keys.map(JSONValue.string))),
            ("capabilities", .array(capabilities.sorted().map { .string($0.rawValue) })),
        ])
    }

    /// The most rules, patterns and pattern length a policy may hold.
    public static let maxRules = 64
    public static let maxPatterns = 64
    public static let maxPatternLength = 256
    /// Wildcards per pattern and pattern characters per policy: matching stays cheap (a
    /// glob's cost grows with its stars) whatever a policy holds.
    public static let maxStars = 8
    public static let maxPolicyCharacters = 8192

    /// Parses one rule as a client sends it; the detail names what is wrong.
    public static func parse(_ value: JSONValue) throws(ServiceError) -> PolicyRule {
        guard case .object = value else { throw ServiceError.unprocessable("each policy rule must be an object") }
        func patterns(_ name: String) throws(ServiceError) -> [String] {
            guard let raw = value[name], !raw.isNull else { return ["*"] }
            guard case .array(let items) = raw, !items.isEmpty, items.count <= maxPatterns else {
                throw ServiceError.unprocessable("\(name) must be a list of 1 to \(maxPatterns) glob patterns")
            }
            var out: [String] = []
            for item in items {
                guard let text = item.stringValue, !text.isEmpty, text.unicodeScalars.count <= maxPatternLength else {
                    throw ServiceError.unprocessable("\(name) must hold non-empty strings of at most \(maxPatternLength) characters")
                }
                guard text.unicodeScalars.filter({ $0 == "*" }).count <= maxStars else {
                    throw ServiceError.unprocessable("\(name): a pattern may hold at most \(maxStars) '*'")
                }
                out.append(text)
            }
            return out
        }
        guard case .array(let raw)? = value["capabilities"], !raw.isEmpty else {
            throw ServiceError.unprocessable(
                "capabilities must be a non-empty list of \(Capability.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        var capabilities = Set<Capability>()
        for item in raw {
            guard let name = item.stringValue, let capability = Capability(rawValue: name) else {
                throw ServiceError.unprocessable(
                    "unknown capability \(item.stringValue.map { "'\($0.prefix(40))'" } ?? item.typeName); known: \(Capability.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            capabilities.insert(capability)
        }
        for (name, _) in objectMembers(value) where !["environments", "keys", "capabilities"].contains(name) {
            throw ServiceError.unprocessable("unknown policy rule field '\(name.prefix(40))'")
        }
        return PolicyRule(environments: try patterns("environments"), keys: try patterns("keys"), capabilities: capabilities)
    }

    private static func objectMembers(_ value: JSONValue) -> [(String, JSONValue)] {
        if case .object(let members) = value { return members }
        return []
    }
}

/// A list of rules: a request is allowed when one rule covers its capability, environment
/// and key.
public struct Policy: Sendable, Equatable {
    public var rules: [PolicyRule]
    public init(rules: [PolicyRule]) { self.rules = rules }

    /// Whether `capability` is allowed on `key` of `environment` (nil: whichever is asked about,
    /// for an operation that addresses no single environment or key, such as a listing, whose
    /// results are then filtered entry by entry).
    public func allows(_ capability: Capability, environment: String?, key: String?) -> Bool {
        rules.contains { $0.covers(capability, environment: environment, key: key) }
    }

    /// Whether a rule over every environment and key allows `capability`: what `admin` and
    /// `audit` need, since they reach beyond any one environment (users, tokens, the trail).
    public func allowsEverywhere(_ capability: Capability) -> Bool {
        rules.contains { rule in
            (rule.capabilities.contains(capability) || rule.capabilities.contains(.admin)) && rule.environments.contains("*")
                && rule.keys.contains("*")
        }
    }

    public var json: JSONValue { .array(rules.map(\.json)) }

    public static func parse(_ value: JSONValue) throws(ServiceError) -> Policy {
        guard case .array(let items) = value, items.count <= PolicyRule.maxRules else {
            throw ServiceError.unprocessable("policies must be a list of at most \(PolicyRule.maxRules) rules")
        }
        var rules: [PolicyRule] = []
        for item in items { rules.append(try PolicyRule.parse(item)) }
        let characters = rules.reduce(0) { $0 + ($1.environments + $1.keys).reduce(0) { $0 + $1.unicodeScalars.count } }
        guard characters <= PolicyRule.maxPolicyCharacters else {
            throw ServiceError.unprocessable("policies may hold at most \(PolicyRule.maxPolicyCharacters) pattern characters in all")
        }
        return Policy(rules: rules)
    }
}

/// A role: a named default policy.
public enum Role: String, Sendable, CaseIterable {
    case reader, writer, admin

    public var policy: Policy {
        switch self {
        case .reader: Policy(rules: [PolicyRule(capabilities: [.read, .list, .history, .events])])
        case .writer: Policy(rules: [PolicyRule(capabilities: [.read, .list, .history, .events, .write, .delete, .rollback])])
        case .admin: Policy(rules: [PolicyRule(capabilities: Set(Capability.allCases))])
        }
    }
}

/// Who a request acts as once its bearer token (or, in `tokens` mode, the break-glass API
/// key) is verified: the subject names it in the audit trail.
public struct Principal: Sendable, Equatable {
    /// `user:alice`, `token:ci-deploy`, or `apikey` (the break-glass credential).
    public var subject: String
    public var role: Role
    public var tenant: String
    /// The rules in force: the given policies, else the role's.
    public var policy: Policy
    /// The token this request carried (its id), when it carried one.
    public var tokenID: String?

    public init(subject: String, role: Role, tenant: String, policy: Policy, tokenID: String? = nil) {
        self.subject = subject
        self.role = role
        self.tenant = tenant
        self.policy = policy
        self.tokenID = tokenID
    }

    /// An administrator: `admin` on every environment and key (a scoped `admin` rule grants
    /// the data capabilities in its scope, never users, tokens or the trail).
    public var isAdmin: Bool { policy.allowsEverywhere(.admin) }
    /// An administrator of the default tenant: manages every tenant and reads the whole audit trail.
    public var isGlobalAdmin: Bool { isAdmin && tenant == Revision.defaultTenant }

    public static let breakGlass = Principal(subject: "apikey", role: .admin, tenant: Revision.defaultTenant, policy: Role.admin.policy)
}

/// Glob patterns: `*` any run of characters, `?` one character, everything else literal.
enum Glob {
    static func matches(_ pattern: String, _ text: String) -> Bool {
        if pattern == "*" { return true }
        let p = Array(pattern.unicodeScalars)
        let t = Array(text.unicodeScalars)
        var (pi, ti) = (0, 0)
        var star = -1
        var mark = 0
        while ti < t.count {
            if pi < p.count && (p[pi] == "?" || p[pi] == t[ti]) {
                pi += 1
                ti += 1
            } else if pi < p.count && p[pi] == "*" {
                star = pi
                mark = ti
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == "*" { pi += 1 }
        return pi == p.count
    }
}
