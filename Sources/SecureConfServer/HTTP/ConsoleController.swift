import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SecureConfCore

/// `/ui/`: the web console, static files embedded in the binary (`Console/`, by the
/// EmbedConsole plugin), served with a strict Content-Security-Policy (scripts and styles
/// from this origin only, nothing inline, no framing) and no cookie: the page keeps its keys
/// in memory and sends them as headers, so another origin cannot act through the browser.
struct ConsoleController<Context: RequestContext>: Sendable {
    let node: SecureConfNode

    func file(_ name: String) throws -> Response {
        guard let file = ConsoleAssets.files[name] else { throw ServiceError(.routeNotFound, "Not Found") }
        var headers = ConsoleAssets.securityHeaders
        headers[.contentType] = file.type
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: file.body))
    }

    /// `GET /ui/` (and `/ui`): the page.
    @Sendable func index(_ request: Request, context: Context) async throws -> Response { try file("index.html") }

    /// `GET /ui/{file}`: a script, style sheet or image of the page.
    @Sendable func asset(_ request: Request, context: Context) async throws -> Response {
        try file(context.parameters.get("file") ?? "")
    }

    /// `GET /ui/config.json`: what the page needs to know before sign-in (nothing secret).
    @Sendable func config(_ request: Request, context: Context) async throws -> Response {
        let c = node.configuration
        var response = JSONResponse.make { w in
            w.raw("{")
            w.member("auth_mode", first: true); w.string(c.authMode.rawValue)
            w.member("api_key_required"); w.raw(c.apiKeyRequired ? "true" : "false")
            w.member("idle_minutes"); w.integer(c.uiIdleMinutes)
            w.member("min_user_key_length"); w.integer(c.minUserKeyLength)
            w.member("node_id"); w.string(c.nodeID)
            w.member("cluster"); w.raw(c.clusterEnabled ? "true" : "false")
            w.raw("}")
        }
        for field in ConsoleAssets.securityHeaders { response.headers[field.name] = field.value }
        return response
    }
}

/// The console's files (embedded by the EmbedConsole plugin), decoded once, and the headers they are served with.
enum ConsoleAssets {
    /// The files by name, with their media types, decoded once.
    static let files: [String: (type: String, body: ByteBuffer)] = {
        var out: [String: (String, ByteBuffer)] = [:]
        for (name, base64) in ConsoleFiles.encoded {
            guard let data = Data(base64Encoded: base64) else { continue }
            out[name] = (mediaType(of: name), ByteBuffer(bytes: data))
        }
        return out
    }()

    static func mediaType(of name: String) -> String {
        switch name.split(separator: ".").last {
        case "html": "text/html; charset=utf-8"
        case "js": "text/javascript; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "svg": "image/svg+xml"
        case "json": "application/json"
        default: "application/octet-stream"
        }
    }

    static let securityHeaders: HTTPFields = [
        HTTPField.Name("Content-Security-Policy")!:
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        HTTPField.Name("X-Frame-Options")!: "DENY",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        HTTPField.Name("Cross-Origin-Opener-Policy")!: "same-origin",
        HTTPField.Name("Cross-Origin-Resource-Policy")!: "same-origin",
        .cacheControl: "no-cache",
    ]

}
