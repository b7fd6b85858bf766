import Foundation
import HTTPTypes
import SecureConfCore
import SecureConfJSON

/// What the OpenAPI document says of one route beyond what the route table declares.
struct RouteDoc: Sendable {
    enum UserKey: Sendable { case none, required, optional }
    enum Body: Sendable {
        case none
        case json(required: Bool)
        case octets
    }

    var summary: String
    var query: [(name: String, required: Bool)] = []
    var userKey: UserKey = .none
    var body: Body = .none
    /// The success status and content type.
    var success: Int = 200
    var produces: String = "application/json"
}

/// `GET /openapi.json`: an OpenAPI 3.1 document of every route, generated from the route table
/// (paths, methods, path parameters, access and its credentials) and `RouteDocs` (summaries,
/// query parameters, bodies); `RouteTableTests` checks that every route has its docs.
enum OpenAPIDocument {
    static let errorStatuses = [400, 401, 403, 404, 405, 409, 413, 422, 429, 503]

    static func build<Context>(_ routes: [Route<Context>], version: String) -> JSONValue {
        var paths: [(String, [(String, JSONValue)])] = []
        for route in routes {
            guard let doc = RouteDocs.all[RouteTable.key(route.method, route.path)] else { continue }
            let operation = self.operation(route, doc)
            if let i = paths.firstIndex(where: { $0.0 == route.path }) {
                paths[i].1.append((route.method.rawValue.lowercased(), operation))
            } else {
                paths.append((route.path, [(route.method.rawValue.lowercased(), operation)]))
            }
        }
        return .object([
            ("openapi", .string("3.1.0")),
            (
                "info",
                .object([
                    ("title", .string("SecureConf")),
                    ("version", .string(version)),
                    (
                        "description",
                        .string(
                            "An OpenSecureConf-compatible, clustered, encrypted configuration and secrets service. Values are encrypted with a key derived from X-User-Key, which only the client holds."
                        )
                    ),
                ])
            ),
            ("paths", .object(paths.map { ($0.0, .object($0.1)) })),
            (
                "components",
                .object([
                    (
                        "securitySchemes",
                        .object([
                            ("apiKey", .object([("type", .string("apiKey")), ("in", .string("header")), ("name", .string("X-API-Key"))])),
                            ("bearer", .object([("type", .string("http")), ("scheme", .string("bearer"))])),
                            (
                                "peer",
                                .object([
                                    ("type", .string("apiKey")), ("in", .string("header")), ("name", .string("X-SecureConf-Signature")),
                                    ("description", .string("Node-to-node requests, signed with OSC_CLUSTER_SECRET")),
                                ])
                            ),
                        ])
                    ),
                    (
                        "schemas",
                        .object([
                            (
                                "Error",
                                .object([
                                    ("type", .string("object")), ("required", .array([.string("detail")])),
                                    ("properties", .object([("detail", .object([("type", .string("string"))]))])),
                                ])
                            )
                        ])
                    ),
                ])
            ),
        ])
    }

    static func operation<Context>(_ route: Route<Context>, _ doc: RouteDoc) -> JSONValue {
        var parameters: [JSONValue] = []
        for segment in route.path.split(separator: "/") where segment.hasPrefix("{") && segment.hasSuffix("}") {
            let name = String(segment.dropFirst().dropLast())
            parameters.append(
                .object([
                    ("name", .string(name)), ("in", .string("path")), ("required", .bool(true)),
                    ("schema", .object([("type", .string(name == "version" ? "integer" : "string"))])),
                ])
            )
        }
        for q in doc.query {
            parameters.append(
                .object([
                    ("name", .string(q.name)), ("in", .string("query")), ("required", .bool(q.required)),
                    ("schema", .object([("type", .string("string"))])),
                ])
            )
        }
        if doc.userKey != .none {
            parameters.append(
                .object([
                    ("name", .string("X-User-Key")), ("in", .string("header")), ("required", .bool(doc.userKey == .required)),
                    ("description", .string("The user key the values are encrypted with (never stored)")),
                    ("schema", .object([("type", .string("string"))])),
                ])
            )
        }
        var responses: [(String, JSONValue)] = [
            (
                String(doc.success),
                .object([
                    ("description", .string("Success")),
                    ("content", .object([(doc.produces, .object([("schema", .object([]))]))])),
                ])
            )
        ]
        let error = JSONValue.object([
            ("description", .string("Refused, with the reason in detail")),
            ("content", .object([("application/json", .object([("schema", .object([("$ref", .string("#/components/schemas/Error"))]))]))])),
        ])
        for status in errorStatuses { responses.append((String(status), error)) }
        var operation: [(String, JSONValue)] = [
            ("summary", .string(doc.summary)),
            ("operationId", .string(operationID(route.method, route.path))),
            ("tags", .array([.string(tag(route.access))])),
            ("parameters", .array(parameters)),
            ("responses", .object(responses)),
        ]
        switch route.access {
        case .data, .eventStream, .operations: operation.append(("security", .array([.object([]), .object([("apiKey", .array([]))])])))
        case .identity, .identityAdmin:
            operation.append(("security", .array([.object([("bearer", .array([]))]), .object([("apiKey", .array([]))])])))
        case .login: break
        case .auditReader: operation.append(("security", .array([.object([("apiKey", .array([]))])])))
        case .peer: operation.append(("security", .array([.object([("peer", .array([]))]), .object([("apiKey", .array([]))])])))
        case .open, .probe: break
        }
        switch doc.body {
        case .none: break
        case .json(let required):
            operation.append(
                (
                    "requestBody",
                    .object([
                        ("required", .bool(required)),
                        ("content", .object([("application/json", .object([("schema", .object([("type", .string("object"))]))]))])),
                    ])
                )
            )
        case .octets:
            operation.append(
                (
                    "requestBody",
                    .object([
                        ("required", .bool(true)),
                        (
                            "content",
                            .object([
                                (
                                    "application/octet-stream",
                                    .object([("schema", .object([("type", .string("string")), ("format", .string("binary"))]))])
                                )
                            ])
                        ),
                    ])
                )
            )
        }
        return .object(operation)
    }

    /// `get_configs_key_versions`: unique per method and path.
    static func operationID(_ method: HTTPRequest.Method, _ path: String) -> String {
        let words = path.split(separator: "/").map {
            $0.trimmingCharacters(in: CharacterSet(charactersIn: "{}")).replacingOccurrences(of: ".", with: "_")
        }
        return ([method.rawValue.lowercased()] + (words.isEmpty ? ["root"] : words)).joined(separator: "_")
    }

    /// `/docs`: the document rendered by a page the node serves itself (no CDN, no script from elsewhere).
    static let docsPage = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>SecureConf API</title>
        <meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
        <style>
        body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#1d2430}
        h1{margin-bottom:0}.op{border:1px solid #d6dbe3;border-radius:6px;margin:.5rem 0;padding:.5rem .8rem}
        .m{display:inline-block;min-width:4.5rem;font-weight:700}.get{color:#0a6}.post{color:#06c}.put{color:#a60}.delete{color:#c33}
        code{background:#f2f4f7;padding:0 .25rem;border-radius:3px}.tag{color:#667;font-size:.85rem}.p{font-size:.9rem;color:#445}
        </style></head>
        <body><h1>SecureConf API</h1><p id="about"></p><p>The document: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
        <div id="ops">Loading…</div>
        <script>
        fetch('/openapi.json').then(r => r.json()).then(doc => {
          document.getElementById('about').textContent = doc.info.description + ' Version ' + doc.info.version + '.';
          const ops = document.getElementById('ops'); ops.textContent = '';
          for (const [path, methods] of Object.entries(doc.paths)) {
            for (const [method, op] of Object.entries(methods)) {
              const div = document.createElement('div'); div.className = 'op';
              const m = document.createElement('span'); m.className = 'm ' + method; m.textContent = method.toUpperCase();
              const p = document.createElement('code'); p.textContent = path;
              const t = document.createElement('span'); t.className = 'tag'; t.textContent = '  ' + (op.tags || []).join(', ');
              const s = document.createElement('div'); s.textContent = op.summary;
              const params = document.createElement('div'); params.className = 'p';
              params.textContent = (op.parameters || []).map(x => x.name + ' (' + x.in + (x.required ? ', required' : '') + ')').join(' · ');
              const codes = document.createElement('div'); codes.className = 'p';
              codes.textContent = 'Responses: ' + Object.keys(op.responses).join(', ');
              div.append(m, p, t, s, params, codes); ops.append(div);
            }
          }
        });
        </script></body></html>
        """

    static func tag(_ access: RouteAccess) -> String {
        switch access {
        case .open, .probe: "service"
        case .operations: "operators"
        case .data: "configurations"
        case .eventStream: "events"
        case .peer: "node-to-node"
        case .auditReader: "audit"
        case .login, .identity, .identityAdmin: "access-control"
        }
    }
}

/// Summaries, query parameters and bodies of every route, by "METHOD path".
enum RouteDocs {
    static let environment = (name: "environment", required: false)
    static let all: [String: RouteDoc] = [
        "GET /": RouteDoc(summary: "Service information and the endpoints it serves"),
        "GET /health": RouteDoc(summary: "Liveness"),
        "GET /ready": RouteDoc(summary: "Readiness: the salt agrees with the cluster and storage takes writes"),
        "GET /metrics": RouteDoc(summary: "Prometheus metrics", produces: "text/plain"),
        "GET /cluster/health": RouteDoc(summary: "Node health, salt fingerprint and clock (for load balancers and peers)"),
        "GET /openapi.json": RouteDoc(summary: "This document"),
        "GET /docs": RouteDoc(summary: "This document, rendered", produces: "text/html"),
        "GET /ui": RouteDoc(summary: "The web console (sign in with the user key and the node's credential)", produces: "text/html"),
        "GET /ui/config.json": RouteDoc(summary: "What the web console needs before sign-in: the node's auth mode and idle timeout"),
        "GET /ui/{file}": RouteDoc(summary: "A script, style sheet or image of the web console"),
        "POST /configs": RouteDoc(summary: "Create an entry", userKey: .required, body: .json(required: true), success: 201),
        "GET /configs": RouteDoc(
            summary: "List the entries the user key opens",
            query: [environment, ("category", false), ("limit", false), ("offset", false), ("after", false), ("mode", false)],
            userKey: .required
        ),
        "GET /configs/{key}": RouteDoc(
            summary: "Read an entry (at a moment with at)",
            query: [environment, ("at", false), ("mode", false)],
            userKey: .required
        ),
        "PUT /configs/{key}": RouteDoc(summary: "Update an entry", query: [environment], userKey: .required, body: .json(required: true)),
        "DELETE /configs/{key}": RouteDoc(summary: "Delete an entry (a tombstone; history is kept)", query: [environment], userKey: .required),
        "GET /configs/{key}/versions": RouteDoc(summary: "An entry's versions, without values", query: [environment], userKey: .optional),
        "GET /configs/{key}/versions/{version}": RouteDoc(summary: "One version's value", query: [environment], userKey: .required),
        "POST /configs/{key}/rollback": RouteDoc(
            summary: "Write an old version's value as a new version",
            query: [environment, ("version", true)],
            userKey: .required
        ),
        "GET /configs/{key}/diff": RouteDoc(
            summary: "RFC 6902 patch between two versions",
            query: [environment, ("from", true), ("to", true)],
            userKey: .required
        ),
        "POST /restore": RouteDoc(
            summary: "Restore an environment to a moment, with new versions",
            query: [environment, ("at", true)],
            userKey: .required
        ),
        "POST /backup": RouteDoc(
            summary: "OpenSecureConf 3.1 backup of what the user key opens (X-Backup-Password)",
            query: [environment, ("category", false)],
            userKey: .required
        ),
        "POST /import": RouteDoc(
            summary: "Import an OpenSecureConf 3.1 backup (X-Backup-Password)",
            query: [("backup_data", false), ("overwrite", false)],
            userKey: .required,
            body: .json(required: false)
        ),
        "GET /stats": RouteDoc(summary: "Counts of the entries the user key opens", userKey: .required),
        "GET /stats/operations": RouteDoc(summary: "The node's operation counters"),
        "GET /sse/subscribe": RouteDoc(
            summary:
                "Change events (text/event-stream): connected, created, updated, deleted; resumes after Last-Event-ID (header, or last_event_id); ?ticket= opens it without headers",
            query: [("key", false), environment, ("category", false), ("ticket", false), ("last_event_id", false)],
            userKey: .optional,
            produces: "text/event-stream"
        ),
        "POST /rekey": RouteDoc(
            summary:
                "Re-encrypt every value the user key opens under X-New-User-Key (a leaked user key retired), as one write; purge=true also removes those keys' older revisions (their old ciphertexts) from history on every node",
            query: [environment, ("purge", false)],
            userKey: .required
        ),
        "POST /auth/login": RouteDoc(summary: "Log in with a username and password (JSON or a form): a bearer token", body: .json(required: true)),
        "POST /auth/logout": RouteDoc(summary: "Revoke the token this request carries"),
        "GET /auth/me": RouteDoc(summary: "Who this request's token is: subject, role, tenant, policies"),
        "GET /auth/users": RouteDoc(summary: "Every user (no password hashes)"),
        "POST /auth/users": RouteDoc(summary: "Create a user: username, password, role, policies", body: .json(required: true), success: 201),
        "PUT /auth/users/{name}": RouteDoc(summary: "Change a user's role, policies or password", body: .json(required: true)),
        "DELETE /auth/users/{name}": RouteDoc(summary: "Delete a user; its login tokens stop working"),
        "GET /auth/tokens": RouteDoc(summary: "Every service token (no secrets), with last_used_at"),
        "POST /auth/tokens": RouteDoc(
            summary: "Create a service token: name, role or policies, expires_in; its secret is shown once",
            body: .json(required: true),
            success: 201
        ),
        "DELETE /auth/tokens/{id}": RouteDoc(summary: "Revoke a token"),
        "POST /sse/ticket": RouteDoc(
            summary: "A single-use ticket (30 s) that opens one event stream with this request's credentials",
            userKey: .optional
        ),
        "GET /sse/stats": RouteDoc(summary: "Event-stream statistics"),
        "GET /sse/subscriptions": RouteDoc(summary: "Open event streams and their filters"),
        "GET /sse/health": RouteDoc(summary: "Event-stream health"),
        "GET /audit": RouteDoc(
            summary: "Search the audit trail",
            query: [
                ("key", false), environment, ("action", false), ("actor", false), ("outcome", false), ("since", false), ("until", false),
                ("limit", false), ("cursor", false),
            ]
        ),
        "GET /audit/export": RouteDoc(
            summary: "Export the audit trail (jsonl or csv)",
            query: [("format", false), ("since", false), ("until", false), environment],
            produces: "application/x-ndjson"
        ),
        "GET /audit/verify": RouteDoc(summary: "Re-compute the audit hash chain"),
        "GET /cluster/status": RouteDoc(summary: "Cluster membership, replication and clocks, for operators"),
        "GET /cluster/distribution": RouteDoc(summary: "Per node, the entries the user key opens there", userKey: .required),
        "GET /cluster/configs": RouteDoc(
            summary: "Names (no values) of the entries the user key opens",
            query: [environment, ("category", false)],
            userKey: .required
        ),
        "GET /cluster/salt": RouteDoc(summary: "The salt, for a joining peer", produces: "application/octet-stream"),
        "POST /cluster/salt": RouteDoc(summary: "Offer a salt: accepted only if it is this node's", body: .octets),
        "POST /cluster/replicate": RouteDoc(summary: "A batch of revisions from a peer", body: .json(required: true)),
        "GET /cluster/digest": RouteDoc(summary: "The anti-entropy digest"),
        "POST /cluster/buckets": RouteDoc(summary: "Revision ids in digest buckets", body: .json(required: true)),
        "POST /cluster/fetch": RouteDoc(summary: "Revisions by id", body: .json(required: true)),
        "POST /cluster/collected": RouteDoc(summary: "Markers of deleted keys whose history was collected", body: .json(required: true)),
        "GET /cluster/revision": RouteDoc(summary: "The newest revision of one key", query: [environment, ("key", true)]),
        "GET /cluster/entries": RouteDoc(summary: "Current entries, tombstones included", query: [environment, ("category", false)]),
        "GET /cluster/changes": RouteDoc(
            summary: "This node's own changes after a sequence number (federated peers' event streams)",
            query: [("after", true), ("limit", true)]
        ),
    ]
}
