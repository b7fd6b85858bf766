import Foundation
import SecureConfStore
import Synchronization

/// What a request tells the audit trail about itself. `AuditMiddleware` opens it with what
/// it knows from the route (action, key, environment, client, request id); handlers add what
/// only they know (the key named in a body, the actor behind a derived key) and, for writes,
/// take a finished record to commit in the same transaction as the data.
public final class AuditNote: Sendable {
    public struct State {
        public var template: AuditRecordDraft?
        public var actor: String?
        public var writtenWithData = false
        /// The record is written once the response's status is known (writes that wait for a
        /// quorum: the trail must say what the client received, 503 included).
        public var deferred = false
        public var handedOut = false
        /// The tenant the request acts in (`tokens` mode): its record is that tenant's.
        public var tenant: String?
    }

    private let state = Mutex(State())

    public init() {}

    /// Called by `AuditMiddleware`; until then (audit disabled) the note records nothing.
    public func open(_ template: AuditRecordDraft, deferred: Bool = false) {
        state.withLock {
            $0.template = template
            $0.deferred = deferred
        }
    }

    /// The configuration key and environment the request addresses (nil leaves a field as is).
    public func target(environment: String? = nil, key: String? = nil) {
        state.withLock { s in
            if let environment { s.template?.environment = String(environment.prefix(AuditLimits.environment)) }
            if let key { s.template?.key = String(key.prefix(AuditLimits.key)) }
        }
    }

    /// The action, when the handler knows better than the route (a read with `at`).
    public func action(_ name: String) {
        state.withLock { $0.template?.action = name }
    }

    /// The credential behind the request, as a stable non-reversible id.
    public func actor(_ id: String) {
        state.withLock { $0.actor = id }
    }

    /// The tenant the request acts in.
    public func tenant(_ name: String) {
        state.withLock { $0.tenant = name }
    }

    /// `draft` as the trail keeps it: another tenant's record names its environment as the
    /// store does (`TenantNames`), so a tenant's records are found, and hashed, as its own.
    /// Names a client sent are kept without control characters: no request can make its
    /// record look like another tenant's (whose stored names begin with one).
    public static func scoped(_ draft: AuditRecordDraft, tenant: String?) -> AuditRecordDraft {
        func printable(_ text: String?) -> String? {
            text.map { String(String.UnicodeScalarView($0.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F })) }
        }
        var scoped = draft
        (scoped.environment, scoped.key) = (printable(draft.environment), printable(draft.key))
        guard let tenant, tenant != Revision.defaultTenant else { return scoped }
        scoped.environment = TenantNames.stored(tenant: tenant, environment: scoped.environment ?? "")
        return scoped
    }

    /// A finished success record for a write to commit with its data; nil when audit is off.
    /// Call `written()` once that write has committed.
    public func recordForWrite(status: Int) -> AuditRecordDraft? {
        state.withLock { s in
            guard !s.deferred, var draft = s.template else { return nil }
            s.handedOut = true
            draft.actor = s.actor ?? "anonymous"
            draft.status = status
            draft.outcome = AuditOutcome.of(status: status)
            draft.time = AuditClock.nowMicros()
            return Self.scoped(draft, tenant: s.tenant)
        }
    }

    public func written() {
        state.withLock { $0.writtenWithData = $0.handedOut }
    }

    public var snapshot: State { state.withLock { $0 } }
}

/// Longest key and environment kept in a record (longer, invalid input is cut).
public enum AuditLimits {
    public static let key = 255
    public static let environment = 100
}

/// `success` below 400, `denied` for 401 and 403, else `failure`.
public enum AuditOutcome {
    public static func of(status: Int) -> String {
        switch status {
        case ..<400: "success"
        case 401, 403: "denied"
        default: "failure"
        }
    }
}

public enum AuditClock {
    public static func nowMicros() -> Int64 { Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()) }
}
