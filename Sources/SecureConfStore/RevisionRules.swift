import Foundation
import SecureConfCrypto

/// The limits on what an entry may be called, the same for a client's request and a
/// revision received from a peer. Lengths count Unicode scalars, as OpenSecureConf (Python)
/// counts code points.
public enum EntryNames {
    public static let maxKeyLength = 255
    public static let maxNameLength = 100
    /// Where users and tokens are kept (`IdentityService`): a name no client can give (it
    /// holds a control character), left out of every listing across environments.
    public static let identityEnvironment = "\u{1}identity"

    static func hasControlCharacters(_ s: String) -> Bool {
        s.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F || (0x80...0x9F).contains($0.value) }
    }

    /// Why `key` is not a valid configuration key, or nil: 1–255 scalars, no control characters, no `/`.
    public static func keyProblem(_ key: String) -> String? {
        if key.isEmpty { return "key must not be empty" }
        if key.unicodeScalars.count > maxKeyLength { return "key must be at most \(maxKeyLength) characters" }
        if hasControlCharacters(key) { return "key must not contain control characters" }
        if key.contains("/") { return "key must not contain '/'" }
        return nil
    }

    /// Why an environment or category name is invalid, or nil: at most 100 scalars, no control characters.
    public static func nameProblem(_ value: String, field: String) -> String? {
        if value.unicodeScalars.count > maxNameLength { return "\(field) must be at most \(maxNameLength) characters" }
        if hasControlCharacters(value) { return "\(field) must not contain control characters" }
        return nil
    }
}

/// Checks a revision received from another node as strictly as a client's write: names,
/// a ciphertext that is a Fernet token, timestamps and stamp within bounds, a plausible
/// origin and actor. Nothing that fails reaches the clock or the store.
public struct RevisionRules: Sendable {
    /// Why a revision was refused.
    public enum Refusal: Error, Equatable, Sendable, CustomStringConvertible {
        /// Malformed: refused for good (4xx).
        case invalid(String)
        /// Stamped further ahead of this node's clock than the skew allows (503): set aside.
        case ahead(seconds: Double)

        public var description: String {
            switch self {
            case let .invalid(why): why
            case let .ahead(seconds): String(format: "stamped %.1f s ahead of this node's clock, beyond OSC_CLUSTER_MAX_CLOCK_SKEW", seconds)
            }
        }
    }

    /// How far ahead of the wall clock a stamp or timestamp may be, in milliseconds.
    public var maxAheadMillis: Int64
    /// The largest ciphertext accepted, in bytes.
    public var maxCiphertextBytes: Int
    /// How much older than its stamp a token's embedded time may be (a slow request, a
    /// restore planned before it commits), in seconds. A replayed old token with a fresh
    /// stamp is older than that.
    public var maxTokenLagSeconds: Int64 = 30
    public var wallClockMillis: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }

    public init(maxAheadMillis: Int64, maxCiphertextBytes: Int) {
        self.maxAheadMillis = maxAheadMillis
        self.maxCiphertextBytes = maxCiphertextBytes
    }

    public static func isNodeID(_ s: String) -> Bool {
        guard (3...255).contains(s.utf8.count), let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]),
            (1...65535).contains(port), colon != s.startIndex
        else { return false }
        return s[..<colon].unicodeScalars.allSatisfy { c in
            (c.value < 0x80 && (CharacterSet.alphanumerics.contains(c) || ".-_[]:".unicodeScalars.contains(c)))
        }
    }

    static func isActor(_ s: String) -> Bool {
        let parts = s.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, (2...3).contains(parts[0].utf8.count), parts[0].utf8.allSatisfy({ (0x61...0x7A).contains($0) }),
            (8...64).contains(parts[1].utf8.count)
        else { return s == "anonymous" }
        return parts[1].utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// Refuses a pruned revision's marker unless its names, origin and stamp are within bounds.
    public func check(_ m: PrunedMarker) throws(Refusal) {
        try checkPlace(environment: m.environment, key: m.key, origin: m.origin, hlc: m.hlc)
        let (limit, _) = wallClockMillis().addingReportingOverflow(maxAheadMillis)
        guard HybridLogicalClock.millis(of: m.hlc) <= limit else { throw .invalid("a pruned revision stamped ahead of this node's clock") }
    }

    /// A revision's (or a pruned one's) place: its names, its origin, a positive stamp. A
    /// tenant's environment is stored (and shipped) with its tenant folded in.
    private func checkPlace(environment: String, key: String, origin: String, hlc: Int64) throws(Refusal) {
        if let p = EntryNames.keyProblem(key) { throw .invalid(p) }
        if let p = TenantNames.storedProblem(environment) { throw .invalid(p) }
        guard Self.isNodeID(origin) else { throw .invalid("origin is not a node id (host:port)") }
        guard hlc > 0 else { throw .invalid("hlc must be positive") }
    }

    /// Refuses `r` unless every field is within bounds.
    public func check(_ r: Revision) throws(Refusal) {
        guard r.tenant == Revision.defaultTenant else { throw .invalid("tenant '\(r.tenant.prefix(40))' is not known here") }
        try checkPlace(environment: r.environment, key: r.key, origin: r.origin, hlc: r.hlc)
        if let c = r.category {
            if let p = EntryNames.nameProblem(c, field: "category") { throw .invalid(p) }
        }
        if let actor = r.actor, !Self.isActor(actor) { throw .invalid("actor is not an actor id") }
        let now = wallClockMillis()
        let stampMillis = HybridLogicalClock.millis(of: r.hlc)
        let (limit, _) = now.addingReportingOverflow(maxAheadMillis)
        if stampMillis > limit { throw .ahead(seconds: Double(stampMillis - now) / 1000) }
        // Timestamps are the origin's wall clock when it wrote: positive, ordered, and never
        // after the stamp's own wall-clock part (the stamp is at least the wall clock).
        guard r.createdAt > 0, r.updatedAt >= r.createdAt else { throw .invalid("created_at and updated_at must be positive and ordered") }
        guard r.updatedAt / 1000 <= stampMillis + 1000 else { throw .invalid("updated_at is later than the revision's stamp") }
        guard stampMillis - r.updatedAt / 1000 <= maxAheadMillis + 1000 else { throw .invalid("updated_at is far earlier than the revision's stamp") }
        if let bound = r.purgesThrough {
            guard r.environment != EntryNames.identityEnvironment else { throw .invalid("users and tokens are not purged") }
            guard bound.hlc > 0, Self.isNodeID(bound.origin), r.supersedes(hlc: bound.hlc, origin: bound.origin) else {
                throw .invalid("purges_through must name an earlier revision (a positive hlc and a node id)")
            }
        }
        if r.deleted {
            guard r.ciphertext.isEmpty else { throw .invalid("a delete carries no ciphertext") }
            // Only a rekey's new value purges what came before it.
            guard r.purgesThrough == nil else { throw .invalid("a delete does not purge older revisions") }
        } else {
            guard r.ciphertext.utf8.count <= maxCiphertextBytes else { throw .invalid("ciphertext larger than \(maxCiphertextBytes) bytes") }
            guard let issued = Fernet.wellFormedTimestamp(of: r.ciphertext) else { throw .invalid("ciphertext is not a Fernet token") }
            let stampSeconds = stampMillis / 1000
            guard issued <= UInt64(max(0, stampSeconds + maxAheadMillis / 1000 + 1)) else {
                throw .invalid("ciphertext was issued after its revision's stamp")
            }
            guard Int64(clamping: issued) >= stampSeconds - maxTokenLagSeconds - maxAheadMillis / 1000 else {
                throw .invalid("ciphertext was issued long before its revision's stamp (a replayed value)")
            }
        }
    }
}
