import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SecureConfCore
import SecureConfCrypto
import SecureConfStore

/// Appends one audit record for every request it wraps (configuration, history, restore,
/// cluster and audit endpoints), successes and failures alike, and lets the response go
/// only once that record is durable: if it cannot be written, the client gets 503 instead.
/// A successful write carries its record into the write's own transaction
/// (`AuditNote.recordForWrite`); every other request appends through the group-commit
/// writer, so concurrent requests share a transaction. Records never hold values, user keys
/// or API keys: the actor is a keyed hash of the credential.
struct AuditMiddleware<Context: AuditedRequestContext>: RouterMiddleware {
    let node: SecureConfNode
    /// Each audited route's action, from the route table (`RouteTable.actions`).
    let actions: [String: String]

    /// Writes wait for a quorum after they commit: their record then waits for the outcome.
    private var waitsForQuorum: Bool {
        guard let settings = node.cluster?.settings else { return false }
        return settings.mode == .replica && settings.writeQuorum != .one
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let endpoint = context.endpointPath ?? "unmatched"
        let query = (try? RequestInput.query(request)) ?? [:]
        let requestID = RequestID.current(request, context: context)
        let pathKey = context.parameters.get("key").flatMap { RequestInput.percentDecode($0, plusIsSpace: false) }
        let addressesKey = endpoint.hasPrefix("/configs/{key}") || endpoint == "/restore"
        let environment = query["environment"].flatMap { $0.isEmpty ? nil : $0 } ?? (addressesKey ? RequestInput.defaultEnvironment : nil)
        context.audit.open(
            AuditRecordDraft(
                time: 0,
                nodeID: node.configuration.nodeID,
                actor: "",
                client: Self.client(context.remoteAddress),
                action: actions[RouteTable.key(request.method, endpoint)] ?? "\(request.method.rawValue.lowercased()) \(endpoint)",
                environment: environment.map { String($0.prefix(AuditLimits.environment)) },
                key: pathKey.map { String($0.prefix(AuditLimits.key)) },
                outcome: "",
                status: 0,
                requestID: requestID
            ),
            deferred: waitsForQuorum
        )

        var response: Response?
        var failure: (any Error)?
        do {
            response = try await next(request, context)
        } catch {
            failure = error
        }
        let apiError = failure.map(ServiceError.from)
        let status = response?.status.code ?? apiError?.status.code ?? 500
        let note = context.audit.snapshot
        if note.writtenWithData {
            node.metrics.auditRecords.increment()
        } else if var draft = note.template {
            draft.actor = actor(request, endpoint: endpoint, noted: note.actor, peer: context.peer.id)
            draft.status = status
            draft.outcome = AuditOutcome.of(status: status)
            draft.time = AuditClock.nowMicros()
            draft = AuditNote.scoped(draft, tenant: note.tenant)
            do {
                try await node.store.appendAudit(draft)
                node.metrics.auditRecords.increment()
            } catch {
                context.logger.error(
                    "audit record not written; refusing the response",
                    metadata: [
                        "action": "\(draft.action)", "status": "\(status)", "request_id": "\(requestID)",
                        "error": "\(ServiceError.from(error).detail)",
                    ]
                )
                // Fail closed, as Vault does when its audit device fails: no unaudited access.
                var why = "storage failure"
                if case StoreError.unavailable(let reason) = error { why = reason }
                throw ServiceError(
                    .auditUnavailable,
                    "Audit trail unavailable (\(why)); the request was refused because it could not be recorded, retry later",
                    retryAfter: 5
                )
            }
        }
        if let failure, var apiError {
            // Unexpected errors keep their type for the outer middleware's log line.
            if apiError.kind.isInternal { throw failure }
            apiError.requestID = requestID
            throw apiError
        }
        guard var response else { throw ServiceError.internalError }
        if let name = AuditActions.requestIDHeader { response.headers[name] = requestID }
        return response
    }

    /// The credential that authorised (or failed to authorise) the request: the user key on
    /// data endpoints, the peer on signed node-to-node requests, the API key on cluster and
    /// audit endpoints, else "anonymous". Never a key derivation of its own: a user key the
    /// handler did not derive is named only if it is already cached ("uk:unverified" else).
    private func actor(_ request: Request, endpoint: String, noted: String?, peer: String?) -> String {
        if let noted { return noted }
        if let peer { return "peer:" + peer }
        let adminEndpoint = endpoint.hasPrefix("/audit") || endpoint.hasPrefix("/cluster")
        if !adminEndpoint, let userKey = try? RequestInput.userKey(request, minimumLength: node.configuration.minUserKeyLength) {
            guard let key = node.keys.cachedKey(for: userKey) else { return "uk:unverified" }
            return node.actor(for: key)
        }
        if let apiKey = request.headers[RequestInput.apiKeyHeader], !apiKey.isEmpty {
            return node.actor(apiKey: apiKey)
        }
        return "anonymous"
    }

    /// `ip:port` (`[ip]:port` for IPv6) of the connection's peer, else "unknown".
    static func client(_ address: SocketAddress?) -> String {
        guard let address else { return "unknown" }
        switch address {
        case .v4: return "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
        case .v6: return "[\(address.ipAddress ?? "?")]:\(address.port ?? 0)"
        case .unixDomainSocket: return "unix"
        }
    }
}

/// The audit action recorded for a route.
enum AuditActions {
    /// Sent back on every audited response; taken from the request when it is a sane token.
    static let requestIDHeader = HTTPField.Name("X-Request-ID")
}

/// Guards the audit endpoints with the admin credential, the API key: `X-API-Key` must equal
/// `OSC_API_KEY` whether or not `OSC_API_KEY_REQUIRED` is set, and with no `OSC_API_KEY`
/// configured the audit trail cannot be read at all (403).
struct AuditAdminMiddleware<Context: RequestContext>: RouterMiddleware {
    let apiKey: [UInt8]?

    init(configuration: NodeConfiguration) {
        apiKey = configuration.apiKey.map { Array($0.utf8) }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let apiKey else {
            throw ServiceError(.auditRequiresAPIKey, "audit requires OSC_API_KEY: set it on the node and send it as X-API-Key")
        }
        guard let given = request.headers[RequestInput.apiKeyHeader] else { throw ServiceError.missingAPIKey }
        guard OpenSSL.constantTimeEquals(OpenSSL.sha256(Array(given.utf8)), OpenSSL.sha256(apiKey)) else { throw ServiceError.wrongAPIKey }
        return try await next(request, context)
    }
}
