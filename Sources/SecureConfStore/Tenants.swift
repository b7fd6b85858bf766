/// How a tenant's entries are kept apart in storage: an environment of a tenant other than
/// `default` is stored (and replicated) under the name `\u{2}<tenant>\u{2}<environment>`,
/// a name no client can give (control characters are refused in names), so the same key in
/// two tenants is two entries, every query of a tenant sees only its own names, and the
/// default tenant's names are OpenSecureConf's, unchanged. Entries leave the store with the
/// name split back (`ConfigEntry.tenant`, `ConfigEntry.environment`).
public enum TenantNames {
    static let separator: Character = "\u{2}"
    public static let maxLength = 64

    /// The stored environment of `environment` in `tenant`.
    public static func stored(tenant: String, environment: String) -> String {
        tenant == Revision.defaultTenant ? environment : "\u{2}\(tenant)\u{2}\(environment)"
    }

    /// The tenant and environment a stored environment name stands for.
    public static func split(_ stored: String) -> (tenant: String, environment: String) {
        guard stored.first == separator else { return (Revision.defaultTenant, stored) }
        let rest = stored.dropFirst()
        guard let end = rest.firstIndex(of: separator) else { return (Revision.defaultTenant, stored) }
        return (String(rest[..<end]), String(rest[rest.index(after: end)...]))
    }

    /// Why `tenant` is not a tenant name, or nil: 1–64 of lowercase letters, digits, `-`, `_`, `.`.
    public static func problem(_ tenant: String) -> String? {
        let allowed = tenant.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
        guard (1...maxLength).contains(tenant.utf8.count), allowed else {
            return "tenant must be 1 to \(maxLength) lowercase letters, digits, '-', '_' or '.'"
        }
        return nil
    }

    /// Why a stored environment name (from a peer) is invalid, or nil.
    public static func storedProblem(_ stored: String) -> String? {
        if stored == EntryNames.identityEnvironment { return nil }
        let (tenant, environment) = split(stored)
        if stored.first == separator {
            guard tenant != Revision.defaultTenant, stored.dropFirst().contains(separator) else { return "environment is not a tenant's environment" }
            if let p = problem(tenant) { return p }
        }
        if environment.isEmpty { return "environment must not be empty" }
        return EntryNames.nameProblem(environment, field: "environment")
    }
}
