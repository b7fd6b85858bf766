import Foundation
import HTTPTypes
import Hummingbird
import Logging
import SecureConfCrypto
import SecureConfStore
import Synchronization

/// The outermost middleware: turns every error into `{"detail": ...}` with the right
/// status, and records request metrics and a debug access line, once for all routes.
struct ObservabilityMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            let apiError = APIError.from(error)
            let endpoint = context.endpointPath ?? "unmatched"
            metrics.recordAPIError(endpoint: endpoint, errorType: apiError.kind)
            if apiError.status.code >= 500 && apiError.kind == "internal" {
                logger.error("request failed", metadata: ["endpoint": "\(endpoint)", "method": "\(request.method)", "error_type": "\(type(of: error))"])
            }
            response = JSONResponse.error(status: apiError.status, detail: apiError.detail, headers: apiError.headers)
        }
        let endpoint = context.endpointPath ?? "unmatched"
        let elapsed = ContinuousClock.now - started
        metrics.recordRequest(method: request.method.rawValue, endpoint: endpoint, status: response.status.code, duration: elapsed)
        if logger.logLevel <= .debug {
            logger.debug("request", metadata: [
                "method": "\(request.method)", "endpoint": "\(endpoint)", "status": "\(response.status.code)",
                "duration_ms": "\(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)",
            ])
        }
        return response
    }
}

/// Requires `X-API-Key` (compared in constant time) when the node is configured to.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let required: Bool
    let apiKey: [UInt8]

    init(configuration: NodeConfiguration) {
        required = configuration.apiKeyRequired
        apiKey = Array((configuration.apiKey ?? "").utf8)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if required {
            guard case .value(let given) = RequestInput.latin1Header(request, RequestInput.apiKeyHeader) else {
                if case .absent = RequestInput.latin1Header(request, RequestInput.apiKeyHeader) { throw APIError.missingAPIKey }
                throw APIError.wrongAPIKey
            }
            // Compare fixed-length digests so neither content nor length leaks through timing.
            let a = OpenSSL.sha256(Array(given.utf8))
            let b = OpenSSL.sha256(apiKey)
            guard OpenSSL.constantTimeEquals(a, b) else { throw APIError.wrongAPIKey }
        }
        return try await next(request, context)
    }
}

/// Data endpoints answer 503 while this node's salt differs from the cluster's, and
/// writes answer 503 while its clock runs ahead of its peers beyond the skew allowed.
struct ServingGateMiddleware<Context: RequestContext>: RouterMiddleware {
    let node: SecureConfNode

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try node.ensureServing()
        if request.method != .get && request.method != .head { try node.ensureClockAllowsWrites() }
        return try await next(request, context)
    }
}

/// The user keys a request derived (cache misses), for `AuthFailureMiddleware`.
final class DerivationTracker: Sendable {
    @TaskLocal static var current: DerivationTracker?
    private let keys = Mutex<(derived: [String], used: [String])>(([], []))
    func derived(_ userKey: String) { keys.withLock { $0.derived.append(userKey) } }
    /// A cached key the request used (a later proof refunds its derivation's count).
    func used(_ userKey: String) { keys.withLock { if $0.used.count < 8 { $0.used.append(userKey) } } }
    var derivedKeys: [String] { keys.withLock { $0.derived } }
    var usedKeys: [String] { keys.withLock { $0.used } }
}

/// Derivations counted as failures until their key is proven, by a keyed hash of the user key
/// (never the key): bounded, oldest dropped.
final class PendingRefunds: Sendable {
    private let state = Mutex<(clients: [String: String], order: [String])>(([:], []))
    private let hashKey = OpenSSL.randomBytes(32)
    static let capacity = 10_000

    private func id(_ userKey: String) -> String { Hex.encode(OpenSSL.hmacSHA256(key: hashKey, data: Array(userKey.utf8)).prefix(16)) }

    func charge(_ userKey: String, client: String) {
        let k = id(userKey)
        state.withLock { s in
            if s.clients[k] == nil { s.order.append(k) }
            s.clients[k] = client
            while s.order.count > Self.capacity {
                s.clients[s.order.removeFirst()] = nil
            }
        }
    }

    /// The client charged for this key's derivation, once.
    func settle(_ userKey: String) -> String? {
        let k = id(userKey)
        return state.withLock { s in s.clients.removeValue(forKey: k) }
    }
}

/// Counts failed user-key attempts per client for `AuthFailureLimiter`, once per request:
/// a wrong or refused key, or a derivation that decrypting stored data did not prove by the
/// end of the request (a create or a list with a new key included: a guess tested against
/// no value is a guess all the same, and it would otherwise be free). Every
/// data, history and restore route sits behind it, and every derivation goes through the
/// limiter (`SecureConfNode.derivedKey`).
struct AuthFailureMiddleware: RouterMiddleware {
    typealias Context = SecureConfRequestContext
    let node: SecureConfNode

    static let failureKinds: Set<String> = ["wrong_user_key", "short_user_key", "missing_user_key", "undecodable_user_key"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let tracker = DerivationTracker()
        do {
            let response = try await DerivationTracker.$current.withValue(tracker) { try await next(request, context) }
            settle(tracker, context)
            return response
        } catch {
            settle(tracker, context)
            // A wrong or unusable key that cost no derivation (a cached key, a short one) counts here.
            if tracker.derivedKeys.isEmpty, Self.failureKinds.contains(APIError.from(error).kind) {
                node.authFailures.recordFailure(context.clientIP)
            }
            throw error
        }
    }

    /// Each derivation was counted when it started; one proven by the end of the request is
    /// refunded, and one proven by a later request (a create, then a read) is refunded then.
    private func settle(_ tracker: DerivationTracker, _ context: Context) {
        for key in tracker.derivedKeys {
            if node.keys.isProven(key) {
                node.authFailures.refund(context.clientIP)
            } else {
                node.pendingRefunds.charge(key, client: context.clientIP)
            }
        }
        for key in tracker.usedKeys where node.keys.isProven(key) {
            if let client = node.pendingRefunds.settle(key) { node.authFailures.refund(client) }
        }
    }

}
