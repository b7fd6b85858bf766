import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCore

/// The one place errors become HTTP: each kind's status, and the `{"detail": ...}` body
/// with `Retry-After` and the request id.
extension ErrorKind {
    var status: HTTPResponse.Status {
        switch self {
        case .badRequest, .alreadyExists: .badRequest
        case .validation: .unprocessableContent
        case .bodyTooLarge: .contentTooLarge
        case .routeNotFound, .notFound, .versionNotFound, .versionPruned, .versionIsDelete, .collected, .clusterDisabled: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .http(let code): HTTPResponse.Status(code: code)
        case .missingUserKey, .shortUserKey, .undecodableUserKey, .wrongUserKey: .unauthorized
        case .peerAuthFailed, .peerAuthMissing, .peerClockSkew, .peerReplayed, .peerUnknown, .invalidTicket: .unauthorized
        case .missingToken, .invalidToken, .wrongPassword: .unauthorized
        case .authRateLimited: .tooManyRequests
        case .missingAPIKey, .wrongAPIKey, .auditRequiresAPIKey, .forbidden: .forbidden
        case .conflict, .saltConflict, .peerSaltMismatch: .conflict
        case .saltMismatch, .clockAhead, .quorumNotReached, .storageUnavailable, .auditUnavailable, .kdfOverloaded, .cancelled, .subscribersFull,
            .shuttingDown, .refilling,
            .identitySyncing:
            .serviceUnavailable
        case .internal: .internalServerError
        }
    }
}

extension ServiceError: HTTPResponseError {
    public var status: HTTPResponse.Status { kind.status }

    public var headers: HTTPFields {
        var fields: HTTPFields = [:]
        if let retryAfterSeconds { fields[.retryAfter] = String(retryAfterSeconds) }
        if let requestID, let name = AuditActions.requestIDHeader { fields[name] = requestID }
        if let allowedMethods { fields[.allow] = allowedMethods }
        return fields
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        JSONResponse.error(status: status, detail: detail, headers: headers)
    }

    /// Maps any error to what the client sees; an error nobody below knew is internal.
    static func from(_ error: any Error) -> ServiceError {
        if let known = ServiceError.domain(error) { return known }
        if let e = error as? HTTPError {
            switch e.status {
            case .notFound: return ServiceError(.routeNotFound, "Not Found")
            case .contentTooLarge: return ServiceError(.bodyTooLarge, "Request body too large")
            case .methodNotAllowed: return ServiceError(.methodNotAllowed, "Method Not Allowed")
            default:
                let detail = e.body ?? e.status.reasonPhrase
                return ServiceError(.http(e.status.code), detail.isEmpty ? "Request error" : detail)
            }
        }
        return .internalError
    }
}
