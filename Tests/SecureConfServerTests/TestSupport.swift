import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore

@testable import SecureConfServer

func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "secureconf-server-test-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// A node on a temporary directory with cheap key derivation, driven in-process.
struct TestNode {
    let directory: String
    let configuration: NodeConfiguration
    let node: SecureConfNode

    init(directory: String = temporaryDirectory(), _ adjust: (inout NodeConfiguration) -> Void = { _ in }) throws {
        var c = NodeConfiguration()
        c.databasePath = directory + "/configurations.db"
        c.saltFilePath = directory + "/encryption.salt"
        c.kdfIterations = 1000
        adjust(&c)
        self.directory = directory
        configuration = c
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        node = try SecureConfNode(configuration: c, logger: logger)
    }

    func run(_ test: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let app = Application(router: buildRouter(node: node))
        try await app.test(.router) { client in try await test(client) }
        await node.close()
    }
}

struct Reply {
    let status: HTTPResponse.Status
    let headers: HTTPFields
    let body: String
    var json: Any? { try? JSONSerialization.jsonObject(with: Data(body.utf8), options: [.fragmentsAllowed]) }
    var object: [String: Any] { json as? [String: Any] ?? [:] }
    var array: [[String: Any]] { json as? [[String: Any]] ?? [] }
    var detail: String? { object["detail"] as? String }
}

extension TestClientProtocol {
    func send(
        _ method: HTTPRequest.Method,
        _ uri: String,
        userKey: String? = "correct-user-key",
        apiKey: String? = nil,
        headers extra: HTTPFields = [:],
        body: String? = nil,
        rawBody: [UInt8]? = nil
    ) async throws -> Reply {
        var headers = extra
        if let userKey { headers[HTTPField.Name("X-User-Key")!] = userKey }
        if let apiKey { headers[HTTPField.Name("X-API-Key")!] = apiKey }
        headers[.contentType] = "application/json"
        let bytes = rawBody ?? body.map { Array($0.utf8) }
        return try await execute(uri: uri, method: method, headers: headers, body: bytes.map { ByteBuffer(bytes: $0) }) { response in
            Reply(status: response.status, headers: response.headers, body: String(buffer: response.body))
        }
    }
}
