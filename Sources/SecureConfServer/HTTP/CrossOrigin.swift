import HTTPTypes
import Hummingbird
import NIOCore

/// Which browser origins may call the node (`CORS_ORIGINS`, as OpenSecureConf reads it:
/// comma-separated, default `*`; empty allows none).
public enum CORSOrigins: Sendable, Equatable {
    case any
    case only(Set<String>)

    /// Parses `CORS_ORIGINS`; nil when an entry is neither `*` nor an `http(s)://host[:port]` origin.
    public static func parse(_ raw: String) -> CORSOrigins? {
        let entries = raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if entries.contains("*") { return .any }
        for origin in entries {
            guard origin.hasPrefix("http://") || origin.hasPrefix("https://") else { return nil }
            let rest = origin.drop(while: { $0 != ":" }).dropFirst(3)
            guard !rest.isEmpty, !rest.contains("/"), !origin.hasSuffix("/") else { return nil }
        }
        return .only(Set(entries))
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, or nil when not allowed.
    func allow(_ origin: String) -> String? {
        switch self {
        case .any: return "*"
        case .only(let origins): return origins.contains(origin) ? origin : nil
        }
    }
}

/// CORS as OpenSecureConf's web GUI needs it (its Starlette middleware's methods and
/// headers, preflight answered 200), outermost so that errors carry the headers too.
///
/// Never `Access-Control-Allow-Credentials`: the node uses no cookies, and a browser must
/// not send any cross-origin. Node-to-node routes never answer with CORS headers. (Not
/// Hummingbird's `CORSMiddleware`: it answers preflights 204, cannot check a request's
/// headers against the allowed ones, and exposes headers on preflights only.)
struct CrossOriginMiddleware<Context: RequestContext>: RouterMiddleware {
    let origins: CORSOrigins
    /// Paths that never carry CORS headers (node-to-node routes).
    let excludedPaths: Set<String>

    static var allowedMethods: [HTTPRequest.Method] { [.delete, .get, .head, .options, .post, .put] }
    static var allowedHeaders: [String] {
        [
            "Accept", "Authorization", "Content-Type", "Last-Event-ID", "Origin", "X-API-Key", "X-Backup-Password", "X-Request-ID",
            "X-Requested-With", "X-User-Key",
        ]
    }
    static var exposedHeaders: String {
        "Content-Length, Content-Type, Retry-After, X-Request-ID, X-SecureConf-Next-After, X-SecureConf-Skipped"
    }
    static var maxAgeSeconds: Int { 3600 }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin], !excludedPaths.contains(request.uri.path) else {
            return try await next(request, context)
        }
        let allowed = origins.allow(origin)
        if request.method == .options, let method = request.headers[.accessControlRequestMethod] {
            return preflight(origin: allowed, method: method, headers: request.headers[.accessControlRequestHeaders])
        }
        var response = try await next(request, context)
        if let allowed {
            response.headers[.accessControlAllowOrigin] = allowed
            response.headers[.accessControlExposeHeaders] = Self.exposedHeaders
            if allowed != "*" { response.headers[values: .vary].append("Origin") }
        }
        return response
    }

    /// 200 with the policy for an allowed origin asking for an allowed method and headers; 400 otherwise.
    private func preflight(origin: String?, method: String, headers requested: String?) -> Response {
        guard let origin else { return refusal("Disallowed CORS origin") }
        guard Self.allowedMethods.contains(where: { $0.rawValue == method.uppercased() }) else { return refusal("Disallowed CORS method") }
        let allowed = Set(Self.allowedHeaders.map { $0.lowercased() })
        let asked = (requested ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty }
        guard asked.allSatisfy(allowed.contains) else { return refusal("Disallowed CORS headers") }
        var fields: HTTPFields = [
            .accessControlAllowOrigin: origin,
            .accessControlAllowMethods: Self.allowedMethods.map(\.rawValue).joined(separator: ", "),
            .accessControlAllowHeaders: Self.allowedHeaders.joined(separator: ", "),
            .accessControlMaxAge: String(Self.maxAgeSeconds),
            .contentType: "text/plain; charset=utf-8",
        ]
        if origin != "*" { fields[.vary] = "Origin" }
        return Response(status: .ok, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: "OK")))
    }

    private func refusal(_ detail: String) -> Response {
        JSONResponse.error(status: .badRequest, detail: detail)
    }
}
