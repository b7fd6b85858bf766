import Foundation
import HTTPTypes
import Hummingbird
import Logging
import SecureConfCore
import SecureConfCrypto
import SecureConfStore
import Synchronization

/// The outermost middleware: turns every error into `{"detail": ...}` with the right
/// status, and records request metrics and a debug access line, once for all routes.
struct ObservabilityMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        // Every line the request causes names it, with the id its audit record and response carry.
        var context = context
        context.logger[metadataKey: RequestID.metadataKey] = .string(RequestID.of(request, context: context))
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            let apiError = ServiceError.from(error)
            let endpoint = context.endpointPath ?? "unmatched"
            metrics.recordAPIError(endpoint: endpoint, errorType: apiError.kind.label)
            if apiError.kind.isInternal {
                context.logger.error(
                    "request failed",
                    metadata: ["endpoint": "\(endpoint)", "method": "\(request.method)", "error_type": "\(type(of: error))"]
                )
            }
            response = JSONResponse.error(status: apiError.status, detail: apiError.detail, headers: apiError.headers)
        }
        let endpoint = context.endpointPath ?? "unmatched"
        let elapsed = ContinuousClock.now - started
        metrics.recordRequest(method: request.method.rawValue, endpoint: endpoint, status: response.status.code, duration: elapsed)
        if context.logger.logLevel <= .debug {
            context.logger.debug(
                "request",
                metadata: [
                    "method": "\(request.method)", "endpoint": "\(endpoint)", "status": "\(response.status.code)",
                    "duration_ms": "\(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)",
                ]
            )
        }
        return response
    }
}

/// Requires `X-API-Key` (compared in constant time) when the node is configured to.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let required: Bool
    let apiKey: [UInt8]
    /// A `?ticket=` stands in for the API key (the service redeems it or answers 401).
    let ticketStandsIn: Bool

    init(configuration: NodeConfiguration, ticketStandsIn: Bool = false) {
        required = configuration.apiKeyRequired
        apiKey = Array((configuration.apiKey ?? "").utf8)
        self.ticketStandsIn = ticketStandsIn
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if required && !(ticketStandsIn && request.uri.queryParameters["ticket"] != nil) {
            guard case .value(let given) = RequestInput.latin1Header(request, RequestInput.apiKeyHeader) else {
                if case .absent = RequestInput.latin1Header(request, RequestInput.apiKeyHeader) { throw ServiceError.missingAPIKey }
                throw ServiceError.wrongAPIKey
            }
            // Compare fixed-length digests so neither content nor length leaks through timing.
            let a = OpenSSL.sha256(Array(given.utf8))
            let b = OpenSSL.sha256(apiKey)
            guard OpenSSL.constantTimeEquals(a, b) else { throw ServiceError.wrongAPIKey }
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

/// Settles the failed-attempt limiter once per request (`CredentialGate.settling`): every
/// data, history and restore route sits behind it, and every derivation goes through the
/// limiter. A wrong or unusable key counts, and so does a derivation that decrypting stored
/// data did not prove by the end of the request (a create or a list with a new key
/// included: a guess tested against no value is a guess all the same).
struct AuthFailureMiddleware: RouterMiddleware {
    typealias Context = SecureConfRequestContext
    let node: SecureConfNode

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await node.credentials.settling(client: context.clientIP) { try await next(request, context) }
    }
}

/// `OSC_AUTH_MODE=tokens`: the request must carry `Authorization: Bearer <token>` (or the
/// break-glass `X-API-Key`, when `OSC_API_KEY` is set); the verified principal goes into the
/// context, and names the request in the audit trail. `needs` is a capability the route
/// requires beyond a valid token (the audit trail's readers need `audit`). A `?ticket=`
/// stands in for the token where `ticketStandsIn` (the ticket carries its issuer's policy).
struct TokenMiddleware<Context: AuditedRequestContext>: RouterMiddleware {
    let identity: IdentityService
    let breakGlassKey: [UInt8]?
    var needs: Capability? = nil
    /// Only the default tenant's principals: what spans every tenant (the audit trail, the
    /// node's operation counters and event subscriptions).
    var crossTenant = false
    var ticketStandsIn = false

    init(node: SecureConfNode, needs: Capability? = nil, crossTenant: Bool = false, ticketStandsIn: Bool = false) {
        identity = node.identity
        breakGlassKey = node.configuration.apiKey.map { OpenSSL.sha256(Array($0.utf8)) }
        self.needs = needs
        self.crossTenant = crossTenant
        self.ticketStandsIn = ticketStandsIn
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if ticketStandsIn && request.uri.queryParameters["ticket"] != nil { return try await next(request, context) }
        var context = context
        // The warm path does not suspend: a cached token is a hash and a lookup.
        let principal: Principal
        switch try credential(request) {
        case .bearer(let bearer):
            if let cached = try identity.cachedPrincipal(bearer) {
                principal = cached
            } else {
                principal = try await identity.verifyFromRecords(bearer)
            }
        case .breakGlass: principal = .breakGlass
        }
        context.audit.actor(principal.subject)
        context.audit.tenant(principal.tenant)
        if let needs, !principal.policy.allowsEverywhere(needs) {
            throw ServiceError(.forbidden, "\(principal.subject) lacks the '\(needs.rawValue)' capability on every environment and key")
        }
        if crossTenant && principal.tenant != Revision.defaultTenant {
            throw ServiceError(.forbidden, "this spans every tenant: only the default tenant's principals may read it")
        }
        context.principal = principal
        return try await next(request, context)
    }

    enum Credential {
        case bearer(IdentityService.Bearer)
        case breakGlass
    }

    /// The token of `Bearer <token>` (the scheme in any case, spaces around the token), or nil.
    static func bearerToken(_ header: String) -> String? {
        let bytes = Array(header.utf8)
        let scheme = Array("bearer".utf8)
        guard bytes.count > scheme.count + 1, zip(bytes, scheme).allSatisfy({ $0 | 0x20 == $1 }), bytes[scheme.count] == 0x20 else { return nil }
        var start = scheme.count + 1
        var end = bytes.count
        while start < end && (bytes[start] == 0x20 || bytes[start] == 0x09) { start += 1 }
        while end > start && (bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09) { end -= 1 }
        return start < end ? String(decoding: bytes[start..<end], as: UTF8.self) : nil
    }

    /// The request's credential: a bearer token, or the break-glass API key.
    func credential(_ request: Request) throws(ServiceError) -> Credential {
        if let header = request.headers[.authorization] {
            guard let token = Self.bearerToken(header) else { throw ServiceError(.invalidToken, "Authorization must be 'Bearer <token>'") }
            return .bearer(try IdentityService.parse(bearer: token))
        }
        if let breakGlassKey, case .value(let given) = RequestInput.latin1Header(request, RequestInput.apiKeyHeader) {
            guard OpenSSL.constantTimeEquals(OpenSSL.sha256(Array(given.utf8)), breakGlassKey) else { throw ServiceError.wrongAPIKey }
            return .breakGlass
        }
        throw ServiceError(.missingToken, "Authorization: Bearer <token> is required (POST /auth/login, or a service token)")
    }
}
