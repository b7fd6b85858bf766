import HTTPTypes
import Hummingbird
import SecureConfCore

/// Who may call a route, and so which gates it passes (outermost first).
enum RouteAccess: CaseIterable {
    /// Anyone; not audited: `/`, `/health`, `/ready`, `/metrics`.
    case open
    /// Anyone, and a peer's signed probe is answered signed; not audited: `/cluster/health`.
    case probe
    /// Audited; `X-API-Key` when required; the serving gate (salt, clock) and the
    /// failed-user-key limiter: every route that reads or writes data.
    case data
    /// Audited; the peer credential (or, without one, the API key); 404 on a single node.
    case peer
    /// Audited; the API key, always (the audit trail's readers).
    case auditReader
    /// As `data`, except that a request carrying `?ticket=` is let through without the API
    /// key: the ticket, checked and redeemed by the service, stands for it (`/sse/subscribe`).
    case eventStream
    /// Audited; in `apikey` mode `X-API-Key` when `OSC_API_KEY_REQUIRED`; in `tokens` mode a default-tenant token with `admin`:
    /// what spans every tenant (operation counters, event subscriptions, cluster status).
    case operations
    /// `tokens` mode only (404 otherwise); audited; no credential: `POST /auth/login`.
    case login
    /// `tokens` mode only; audited; any valid token: `/auth/me`, `/auth/logout`.
    case identity
    /// `tokens` mode only; audited; a token whose policy has `admin`: users and service tokens.
    case identityAdmin
}

/// One route: where it is declared, with its audit action, its access, and the name under
/// which `GET /` lists it. The table below is the one source of truth for all three.
struct Route<Context: RequestContext>: Sendable {
    let method: HTTPRequest.Method
    let path: String
    let access: RouteAccess
    /// The action its audit records carry (audited routes).
    let action: String?
    /// Its name in the service information's `endpoints` (nil: not listed).
    let listedAs: String?
    let handler: @Sendable (Request, Context) async throws -> Response

    init(
        _ method: HTTPRequest.Method,
        _ path: String,
        _ access: RouteAccess,
        action: String? = nil,
        listedAs: String? = nil,
        _ handler: @escaping @Sendable (Request, Context) async throws -> Response
    ) {
        self.method = method
        self.path = path
        self.access = access
        self.action = action
        self.listedAs = listedAs
        self.handler = handler
    }
}

enum RouteTable {
    /// Every route the node serves.
    static func routes(node: SecureConfNode) -> [Route<SecureConfRequestContext>] {
        typealias Context = SecureConfRequestContext
        let system = SystemController<Context>(node: node)
        let configs = ConfigController<Context>(node: node)
        let history = HistoryController<Context>(node: node)
        let audit = AuditController<Context>(node: node)
        let cluster = ClusterController<Context>(node: node)
        let stats = StatsController<Context>(node: node)
        let backups = BackupController<Context>(node: node)
        let events = EventsController<Context>(node: node)
        let auth = AuthController<Context>(node: node)
        let console = ConsoleController<Context>(node: node)
        // The /auth routes exist in `tokens` mode only: in `apikey` mode the node is OpenSecureConf's.
        let identityRoutes: [Route<Context>] =
            node.configuration.authMode != .tokens
            ? []
            : [
                Route(.post, "/auth/login", .login, action: "login", listedAs: "auth_login", auth.login),
                Route(.post, "/auth/logout", .identity, action: "logout", listedAs: "auth_logout", auth.logout),
                Route(.get, "/auth/me", .identity, action: "auth_me", listedAs: "auth_me", auth.me),
                Route(.get, "/auth/users", .identityAdmin, action: "user_list", listedAs: "auth_users", auth.listUsers),
                Route(.post, "/auth/users", .identityAdmin, action: "user_create", auth.addUser),
                Route(.put, "/auth/users/{name}", .identityAdmin, action: "user_update", auth.updateUser),
                Route(.delete, "/auth/users/{name}", .identityAdmin, action: "user_delete", auth.deleteUser),
                Route(.get, "/auth/tokens", .identityAdmin, action: "token_list", listedAs: "auth_tokens", auth.listTokens),
                Route(.post, "/auth/tokens", .identityAdmin, action: "token_create", auth.createToken),
                Route(.delete, "/auth/tokens/{id}", .identityAdmin, action: "token_revoke", auth.revokeToken),
            ]
        return [
            Route(.get, "/", .open, system.info),
            Route(.get, "/health", .open, listedAs: "health", system.health),
            Route(.get, "/ready", .open, listedAs: "ready", system.ready),
            Route(.get, "/metrics", .open, listedAs: "metrics", system.metrics),
            Route(.get, "/cluster/health", .probe, listedAs: "cluster_health", system.clusterHealth),
            Route(.get, "/openapi.json", .open, listedAs: "openapi", system.openAPI),
            Route(.get, "/docs", .open, listedAs: "docs", system.docs),
            Route(.get, "/ui", .open, listedAs: "console", console.index),
            Route(.get, "/ui/config.json", .open, console.config),
            Route(.get, "/ui/{file}", .open, console.asset),

            Route(.post, "/configs", .data, action: "create", listedAs: "create", configs.create),
            Route(.get, "/configs", .data, action: "list", listedAs: "list", configs.list),
            Route(.get, "/configs/{key}", .data, action: "read", listedAs: "read", configs.read),
            Route(.put, "/configs/{key}", .data, action: "update", listedAs: "update", configs.update),
            Route(.delete, "/configs/{key}", .data, action: "delete", listedAs: "delete", configs.delete),
            Route(.get, "/configs/{key}/versions", .data, action: "versions", listedAs: "versions", history.versions),
            Route(.get, "/configs/{key}/versions/{version}", .data, action: "read_version", listedAs: "version", history.readVersion),
            Route(.post, "/configs/{key}/rollback", .data, action: "rollback", listedAs: "rollback", history.rollback),
            Route(.get, "/configs/{key}/diff", .data, action: "diff", listedAs: "diff", history.diff),
            Route(.post, "/restore", .data, action: "restore", listedAs: "restore", history.restore),
            Route(.post, "/rekey", .data, action: "rekey", listedAs: "rekey", history.rekey),
            Route(.post, "/backup", .data, action: "backup", listedAs: "backup", backups.backup),
            Route(.post, "/import", .data, action: "import", listedAs: "import", backups.importBackup),
            Route(.get, "/stats", .data, action: "stats", listedAs: "stats", stats.stats),
            Route(.get, "/stats/operations", .operations, action: "stats_operations", listedAs: "stats_operations", stats.operations),

            Route(.get, "/sse/subscribe", .eventStream, action: "subscribe", listedAs: "sse_subscribe", events.subscribe),
            Route(.post, "/sse/ticket", .data, action: "sse_ticket", listedAs: "sse_ticket", events.ticket),
            Route(.get, "/sse/stats", .operations, action: "sse_stats", listedAs: "sse_stats", events.stats),
            Route(.get, "/sse/subscriptions", .operations, action: "sse_subscriptions", listedAs: "sse_subscriptions", events.subscriptions),
            Route(.get, "/sse/health", .open, listedAs: "sse_health", events.health),

            Route(.get, "/audit", .auditReader, action: "audit_search", listedAs: "audit", audit.search),
            Route(.get, "/audit/export", .auditReader, action: "audit_export", listedAs: "audit_export", audit.export),
            Route(.get, "/audit/verify", .auditReader, action: "audit_verify", listedAs: "audit_verify", audit.verify),

            Route(.get, "/cluster/status", .operations, action: "cluster_status", listedAs: "cluster_status", system.clusterStatus),
            Route(.get, "/cluster/distribution", .data, action: "cluster_distribution", listedAs: "cluster_distribution", stats.distribution),
            Route(.get, "/cluster/configs", .data, action: "cluster_configs", listedAs: "cluster_configs", stats.clusterConfigs),
            Route(.get, "/cluster/salt", .peer, action: "cluster_salt_read", system.salt),
            Route(.post, "/cluster/salt", .peer, action: "cluster_salt_write", system.receiveSalt),
            Route(.post, "/cluster/replicate", .peer, action: "cluster_replicate", cluster.replicate),
            Route(.get, "/cluster/digest", .peer, action: "cluster_digest", cluster.digest),
            Route(.post, "/cluster/buckets", .peer, action: "cluster_buckets", cluster.buckets),
            Route(.post, "/cluster/fetch", .peer, action: "cluster_fetch", cluster.fetch),
            Route(.post, "/cluster/collected", .peer, action: "cluster_collected", cluster.collected),
            Route(.get, "/cluster/revision", .peer, action: "cluster_revision", cluster.revision),
            Route(.get, "/cluster/entries", .peer, action: "cluster_entries", cluster.entries),
            Route(.get, "/cluster/changes", .peer, action: "cluster_changes", cluster.changes),
        ] + identityRoutes
    }

    /// The audit action of each audited route, by method and path.
    static func actions<Context>(_ routes: [Route<Context>]) -> [String: String] {
        var actions: [String: String] = [:]
        for route in routes { if let action = route.action { actions[key(route.method, route.path)] = action } }
        return actions
    }

    static func key(_ method: HTTPRequest.Method, _ path: String) -> String { method.rawValue + " " + path }

    /// Methods a path serves, HEAD included where GET is, in a stable order; by path.
    static func methodsByPath<Context>(_ routes: [Route<Context>]) -> [(String, [HTTPRequest.Method])] {
        var byPath: [String: Set<String>] = [:]
        var order: [String] = []
        for route in routes {
            if byPath[route.path] == nil { order.append(route.path) }
            byPath[route.path, default: []].insert(route.method.rawValue)
            if route.method == .get { byPath[route.path]!.insert(HTTPRequest.Method.head.rawValue) }
        }
        return order.map { path in (path, byPath[path]!.sorted().map { HTTPRequest.Method($0)! }) }
    }

    /// The methods a known path answers with 405 when it does not serve them.
    static var methodsAnswered405: [HTTPRequest.Method] {
        [.get, .head, .post, .put, .delete, .patch, .options, .trace, HTTPRequest.Method("QUERY")!]
    }

    /// `GET /`'s `endpoints`: name to "METHOD path", in table order.
    static func listing<Context>(_ routes: [Route<Context>]) -> [(String, String)] {
        routes.compactMap { route in route.listedAs.map { ($0, "\(route.method.rawValue) \(route.path)") } }
    }
}

/// The router with every route of the table behind its gates: what tests drive in-process.
///
/// Audited routes sit behind `AuditMiddleware` (when `OSC_AUDIT_ENABLED`), outside the
/// credential checks so that refused requests are recorded too.
public func buildRouter(node: SecureConfNode) -> Router<SecureConfRequestContext> {
    typealias Context = SecureConfRequestContext
    let routes = RouteTable.routes(node: node)
    let router = Router(context: Context.self)
    let peerPaths = Set(routes.filter { $0.access == .peer }.map(\.path))
    router.middlewares.add(CrossOriginMiddleware(origins: node.configuration.corsOrigins, excludedPaths: peerPaths))
    router.middlewares.add(ObservabilityMiddleware(metrics: node.metrics))
    let audited = router.group()
    if node.configuration.auditEnabled { audited.add(middleware: AuditMiddleware<Context>(node: node, actions: RouteTable.actions(routes))) }
    // The credential gate: the API key (`apikey` mode, OpenSecureConf's), or a bearer token
    // (`tokens` mode), in which the /auth routes exist.
    let tokens = node.configuration.authMode == .tokens
    func credential(needs: Capability? = nil, crossTenant: Bool = false, ticketStandsIn: Bool = false) -> RouterGroup<Context> {
        tokens
            ? audited.group().add(
                middleware: TokenMiddleware<Context>(node: node, needs: needs, crossTenant: crossTenant, ticketStandsIn: ticketStandsIn)
            )
            : audited.group().add(middleware: APIKeyMiddleware(configuration: node.configuration, ticketStandsIn: ticketStandsIn))
    }
    let client = credential()
    let gated = { (group: RouterGroup<Context>) in
        group.add(middleware: ServingGateMiddleware(node: node)).add(middleware: AuthFailureMiddleware(node: node))
    }
    let groups: [RouteAccess: RouterGroup<Context>] = [
        .open: router.group(),
        .probe: router.group().add(middleware: PeerAuthMiddleware<Context>(node: node, optional: true)),
        .data: gated(client.group()),
        .peer: audited.group().add(middleware: PeerAuthMiddleware<Context>(node: node)),
        .auditReader: tokens
            ? credential(needs: .audit) : audited.group().add(middleware: AuditAdminMiddleware(configuration: node.configuration)),
        .operations: tokens ? credential(needs: .admin, crossTenant: true) : client,
        .eventStream: gated(credential(ticketStandsIn: true)),
        .login: audited.group().add(middleware: ServingGateMiddleware(node: node)),
        .identity: credential().add(middleware: ServingGateMiddleware(node: node)),
        .identityAdmin: credential(needs: .admin).add(middleware: ServingGateMiddleware(node: node)),
    ]
    for route in routes {
        groups[route.access]!.on(RouterPath(route.path), method: route.method, use: route.handler)
        // HEAD wherever GET is: the same gates and answer, without the body.
        if route.method == .get {
            let get = route.handler
            groups[route.access]!.on(RouterPath(route.path), method: .head) { request, context in
                let response = try await get(request, context)
                return Response(status: response.status, headers: response.headers, body: ResponseBody())
            }
        }
    }
    // A known path asked with a method it does not serve: 405 with `Allow`, before any gate
    // (not node-to-node paths: they stay 404 to clients).
    for (path, methods) in RouteTable.methodsByPath(routes.filter { $0.access != .peer }) {
        let allow = methods.map(\.rawValue).joined(separator: ", ")
        for method in RouteTable.methodsAnswered405 where !methods.contains(method) {
            groups[.open]!.on(RouterPath(path), method: method) { _, _ -> Response in
                var refusal = ServiceError(.methodNotAllowed, "Method Not Allowed")
                refusal.allowedMethods = allow
                throw refusal
            }
        }
    }
    return router
}
