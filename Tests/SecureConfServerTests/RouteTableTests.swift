import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import SecureConfServer

@Suite struct RouteTableTests {
    /// A request for a listed endpoint, its placeholders filled in.
    static func uri(_ path: String) -> String {
        path.replacingOccurrences(of: "{key}", with: "k").replacingOccurrences(of: "{version}", with: "1")
            + (path == "/restore"
                ? "?at=2020-01-01T00:00:00Z" : path.hasSuffix("/diff") ? "?from=1&to=1" : path.hasSuffix("/rollback") ? "?version=1" : "")
    }

    @Test func everyEndpointListedByTheServiceInformationIsServedBehindItsGates() async throws {
        try await TestNode({
            $0.apiKey = "the-api-key-0123456789"; $0.apiKeyRequired = true; $0.authFailureLimit = 2
        }).run { client in
            let info = try await client.send(.get, "/")
            let endpoints = try #require(info.object["endpoints"] as? [String: String])
            let routes = RouteTable.routes(node: try TestNode().node)
            #expect(endpoints.count == RouteTable.listing(routes).count && endpoints["restore"] == "POST /restore")
            for (name, endpoint) in endpoints {
                let parts = endpoint.split(separator: " ", maxSplits: 1).map(String.init)
                let route = try #require(routes.first { $0.listedAs == name })
                // An event stream never ends: its HEAD answers as its GET begins.
                let method = route.access == .eventStream ? .head : HTTPRequest.Method(parts[0])!
                let reply = try await client.send(method, Self.uri(parts[1]), apiKey: "the-api-key-0123456789", body: method == .get ? nil : "{}")
                #expect(
                    reply.detail != "Not Found" && reply.status != .methodNotAllowed,
                    "\(name): \(endpoint) is routed, got \(reply.status) \(reply.body)"
                )
                if [.data, .operations, .auditReader, .eventStream].contains(route.access) {
                    let refused = try await client.send(method, Self.uri(parts[1]), apiKey: nil, body: method == .get ? nil : "{}")
                    #expect(refused.status == .forbidden, "\(endpoint) without the API key: \(refused.status)")
                }
            }
            // Every data route meets the failed-user-key limiter: once this client has spent its
            // attempts, a new key is refused with 429 on each of them.
            #expect(try await client.send(.post, "/configs", apiKey: "the-api-key-0123456789", body: #"{"key":"k","value":1}"#).status == .created)
            for i in 0..<3 {
                _ = try await client.send(.get, "/configs/k", userKey: "wrong-user-key-\(i)", apiKey: "the-api-key-0123456789")
            }
            // (The versions listing asks an API-key holder for no user key: it derives nothing.)
            // (Distribution needs a cluster: a single node answers 400 before any key work. An
            // import opens the backup before the user key: a malformed one is 4xx first.)
            let skipped: Set<String> = ["/configs/{key}/versions", "/cluster/distribution", "/import"]
            for route in routes where route.access == .data && !skipped.contains(route.path) {
                let r = try await client.send(
                    route.method,
                    Self.uri(route.path),
                    userKey: "yet-another-wrong-key",
                    apiKey: "the-api-key-0123456789",
                    headers: [HTTPField.Name("X-Backup-Password")!: "a-backup-password", HTTPField.Name("X-New-User-Key")!: "a-new-user-key-01"],
                    body: route.method == .get ? nil : #"{"key":"k2","value":1}"#
                )
                #expect(r.status == .tooManyRequests, "\(route.method) \(route.path): \(r.status) \(r.body)")
            }
        }
    }

    @Test func everyRouteIsInTheOpenAPIDocumentAndNothingElseIs() throws {
        let routes = RouteTable.routes(node: try TestNode().node)
        let tokenModeRoutes = RouteTable.routes(node: try TestNode { $0.authMode = .tokens }.node)
        #expect(!routes.contains { $0.path.hasPrefix("/auth/") }, "in apikey mode the node has OpenSecureConf's routes")
        let keys = Set(tokenModeRoutes.map { RouteTable.key($0.method, $0.path) })
        #expect(Set(routes.map { RouteTable.key($0.method, $0.path) }).isSubset(of: keys))
        #expect(Set(RouteDocs.all.keys) == keys, "docs for every route, and only for routes")
        guard case .object(let top) = OpenAPIDocument.build(tokenModeRoutes, version: "test"),
            case .object(let paths)? = top.first(where: { $0.0 == "paths" })?.1
        else {
            Issue.record("no paths")
            return
        }
        let documented = Set(
            paths.flatMap { path, methods -> [String] in
                guard case .object(let ops) = methods else { return [] }
                return ops.map { "\($0.0.uppercased()) \(path)" }
            }
        )
        #expect(documented == keys)
    }
}
