import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCrypto
import SecureConfStore

/// An error a client caused or must know about: a status, a `detail` the client can act
/// on, and a short `kind` for `osc_api_errors_total`. The one place domain errors become HTTP.
public struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let detail: String
    public let kind: String
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, _ detail: String, kind: String, headers: HTTPFields = [:]) {
        self.status = status
        self.detail = detail
        self.kind = kind
        self.headers = headers
    }

    public var description: String { "\(status.code) \(detail)" }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        JSONResponse.error(status: status, detail: detail, headers: headers)
    }

    static func badRequest(_ detail: String) -> APIError { APIError(.badRequest, detail, kind: "bad_request") }
    static func unprocessable(_ detail: String) -> APIError { APIError(.unprocessableContent, detail, kind: "validation") }
    static let missingUserKey = APIError(.unauthorized, "X-User-Key header missing", kind: "missing_user_key")
    static func shortUserKey(_ minimum: Int) -> APIError {
        APIError(.unauthorized, "X-User-Key must be at least \(minimum) characters long", kind: "short_user_key")
    }
    static let wrongUserKey = APIError(.unauthorized, "Invalid user key: unable to decrypt configuration", kind: "wrong_user_key")
    static let missingAPIKey = APIError(.forbidden, "API key required but missing. Provide X-API-Key header.", kind: "missing_api_key")
    static let wrongAPIKey = APIError(.forbidden, "Invalid API key", kind: "wrong_api_key")

    /// Maps any error thrown below the HTTP layer to what the client sees.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError:
            return e
        case let e as StoreError:
            switch e {
            case .alreadyExists: return APIError(.badRequest, e.description, kind: "already_exists")
            case .notFound: return APIError(.notFound, e.description, kind: "not_found")
            case .versionNotFound: return APIError(.notFound, e.description, kind: "version_not_found")
            case .versionPruned: return APIError(.notFound, e.description, kind: "version_pruned")
            case .versionIsDelete: return APIError(.notFound, e.description, kind: "version_is_delete")
            case .conflict: return APIError(.conflict, e.description, kind: "conflict")
            case .wrongKey: return wrongUserKey
            case .unavailable(let why):
                return APIError(.serviceUnavailable, "Storage unavailable (\(why)); the write was not applied, retry later",
                                kind: "storage_unavailable", headers: [.retryAfter: "5"])
            }
        case let e as KeyDerivationOverloaded:
            return APIError(.serviceUnavailable, "Server busy deriving keys; retry shortly", kind: "kdf_overloaded",
                            headers: [.retryAfter: String(e.retryAfterSeconds)])
        case let e as HTTPError:
            switch e.status {
            case .notFound: return APIError(.notFound, "Not Found", kind: "route_not_found")
            case .contentTooLarge: return APIError(.contentTooLarge, "Request body too large", kind: "body_too_large")
            case .methodNotAllowed: return APIError(.methodNotAllowed, "Method Not Allowed", kind: "method_not_allowed")
            default:
                let detail = e.body ?? e.status.reasonPhrase
                return APIError(e.status, detail.isEmpty ? "Request error" : detail, kind: "http_\(e.status.code)", headers: e.headers)
            }
        case is CancellationError:
            return APIError(.serviceUnavailable, "Request cancelled", kind: "cancelled")
        default:
            return APIError(.internalServerError, "Internal server error", kind: "internal")
        }
    }
}
