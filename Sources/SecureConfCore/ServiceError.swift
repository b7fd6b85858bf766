import SecureConfCluster
import SecureConfCrypto
import SecureConfStore

/// What went wrong, as a type: the HTTP layer maps each kind to a status in one place
/// (`ErrorKind.status` in SecureConfServer), the failed-attempt limiter asks whether it
/// counts against a credential, and the log asks whether it is the server's own fault.
/// `label` is the `error_type` of `osc_api_errors_total`.
public enum ErrorKind: Sendable, Hashable {
    // The request itself.
    case badRequest, validation, bodyTooLarge, routeNotFound, methodNotAllowed
    /// Any other HTTP-level refusal from the framework, with its status code.
    case http(Int)
    // Credentials.
    case missingUserKey, shortUserKey, undecodableUserKey, wrongUserKey, authRateLimited
    case missingAPIKey, wrongAPIKey, auditRequiresAPIKey, invalidTicket, peerAuthFailed, peerAuthMissing, peerClockSkew, peerReplayed, peerUnknown
    /// `tokens` mode: no bearer token, one that is invalid, expired or revoked, a wrong login.
    case missingToken, invalidToken, wrongPassword
    /// The caller's credential is valid but not allowed this operation.
    case forbidden
    // What the request addresses.
    case alreadyExists, notFound, versionNotFound, versionPruned, versionIsDelete, conflict, saltConflict, clusterDisabled
    /// The key was deleted and its history collected (404).
    case collected
    /// A peer's message under another salt fingerprint (replication refused, 409).
    case peerSaltMismatch
    // The node cannot serve it now.
    case saltMismatch, clockAhead, quorumNotReached, storageUnavailable, auditUnavailable, kdfOverloaded, cancelled, subscribersFull, shuttingDown
    /// A returning cluster node has not caught up with a peer yet, so it cannot trust its tokens.
    case identitySyncing
    /// A node back after longer than the tombstone horizon has not refilled from a peer yet.
    case refilling
    /// A fault of the server's own.
    case `internal`

    public var label: String {
        switch self {
        case .badRequest: "bad_request"
        case .validation: "validation"
        case .bodyTooLarge: "body_too_large"
        case .routeNotFound: "route_not_found"
        case .methodNotAllowed: "method_not_allowed"
        case .http(let code): "http_\(code)"
        case .missingUserKey: "missing_user_key"
        case .shortUserKey: "short_user_key"
        case .undecodableUserKey: "undecodable_user_key"
        case .wrongUserKey: "wrong_user_key"
        case .authRateLimited: "auth_rate_limited"
        case .missingAPIKey: "missing_api_key"
        case .wrongAPIKey: "wrong_api_key"
        case .auditRequiresAPIKey: "audit_requires_api_key"
        case .invalidTicket: "invalid_ticket"
        case .missingToken: "missing_token"
        case .invalidToken: "invalid_token"
        case .wrongPassword: "wrong_password"
        case .identitySyncing: "identity_syncing"
        case .refilling: "refilling"
        case .peerAuthFailed: "peer_auth_failed"
        case .peerAuthMissing: "peer_auth_missing"
        case .peerClockSkew: "peer_clock_skew"
        case .peerReplayed: "peer_replayed"
        case .peerUnknown: "peer_unknown"
        case .forbidden: "forbidden"
        case .alreadyExists: "already_exists"
        case .notFound: "not_found"
        case .versionNotFound: "version_not_found"
        case .versionPruned: "version_pruned"
        case .versionIsDelete: "version_is_delete"
        case .collected: "collected"
        case .conflict: "conflict"
        case .saltConflict: "salt_conflict"
        case .peerSaltMismatch: "salt_mismatch"
        case .clusterDisabled: "cluster_disabled"
        case .saltMismatch: "salt_mismatch"
        case .clockAhead: "clock_ahead"
        case .quorumNotReached: "quorum_not_reached"
        case .storageUnavailable: "storage_unavailable"
        case .shuttingDown: "shutting_down"
        case .auditUnavailable: "audit_unavailable"
        case .kdfOverloaded: "kdf_overloaded"
        case .cancelled: "cancelled"
        case .subscribersFull: "subscribers_full"
        case .internal: "internal"
        }
    }

    /// A user key that is wrong or unusable: the failed-attempt limiter counts it.
    public var countsAsFailedUserKey: Bool {
        switch self {
        case .wrongUserKey, .shortUserKey, .missingUserKey, .undecodableUserKey: true
        default: false
        }
    }

    /// The server's own fault (logged with the error's type; never the client's input).
    public var isInternal: Bool { self == .internal }
}

/// An error a client caused or must know about: a kind and a `detail` the client can act on.
public struct ServiceError: Error, Sendable, CustomStringConvertible {
    public let kind: ErrorKind
    public let detail: String
    /// Seconds after which a retry may succeed (`Retry-After`), for refusals of the moment.
    public var retryAfterSeconds: Int?
    /// The request id, echoed on error responses as on successes.
    public var requestID: String?
    /// The methods a path does serve (`Allow`, on 405).
    public var allowedMethods: String?

    public init(_ kind: ErrorKind, _ detail: String, retryAfter: Int? = nil) {
        self.kind = kind
        self.detail = detail
        self.retryAfterSeconds = retryAfter
    }

    public var description: String { "\(kind.label): \(detail)" }

    public static func badRequest(_ detail: String) -> ServiceError { ServiceError(.badRequest, detail) }
    public static func unprocessable(_ detail: String) -> ServiceError { ServiceError(.validation, detail) }
    public static let missingUserKey = ServiceError(.missingUserKey, "X-User-Key header missing")
    public static func shortUserKey(_ minimum: Int) -> ServiceError {
        ServiceError(.shortUserKey, "X-User-Key must be at least \(minimum) characters long")
    }
    public static let wrongUserKey = ServiceError(.wrongUserKey, "Invalid user key: unable to decrypt configuration")
    public static let missingAPIKey = ServiceError(.missingAPIKey, "API key required but missing. Provide X-API-Key header.")
    public static let wrongAPIKey = ServiceError(.wrongAPIKey, "Invalid API key")
    public static let internalError = ServiceError(.internal, "Internal server error")

    /// The service error for an error from the layers below (the store, the key cache);
    /// nil for an error this layer does not know.
    public static func domain(_ error: any Error) -> ServiceError? {
        switch error {
        case let e as ServiceError:
            return e
        case let e as StoreError:
            switch e {
            case .alreadyExists: return ServiceError(.alreadyExists, e.description)
            case .notFound: return ServiceError(.notFound, e.description)
            case .versionNotFound: return ServiceError(.versionNotFound, e.description)
            case .versionPruned: return ServiceError(.versionPruned, e.description)
            case .versionIsDelete: return ServiceError(.versionIsDelete, e.description)
            case .collected: return ServiceError(.collected, e.description)
            case .conflict: return ServiceError(.conflict, e.description)
            case .unknownTenant: return ServiceError(.notFound, e.description)
            case .wrongKey: return wrongUserKey
            case .unavailable(let why):
                return ServiceError(.storageUnavailable, "Storage unavailable (\(why)); the write was not applied, retry later", retryAfter: 5)
            }
        case let e as KeyDerivationOverloaded:
            return ServiceError(.kdfOverloaded, "Server busy deriving keys; retry shortly", retryAfter: e.retryAfterSeconds)
        case let e as PeerInputError:
            switch e.kind {
            case .malformed: return ServiceError(.badRequest, e.description)
            case .foreignSalt: return ServiceError(.peerSaltMismatch, e.description)
            }
        case is CancellationError:
            return ServiceError(.cancelled, "Request cancelled")
        default:
            return nil
        }
    }
}
