import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A peer answered with an error status or could not be reached.
public struct PeerError: Error, CustomStringConvertible {
    public let peer: String
    public let status: Int?
    public let reason: String
    public var description: String { "peer \(peer): \(status.map { "HTTP \($0): " } ?? "")\(reason)" }
}

/// Node-to-node HTTP over libcurl (Foundation's URLSession on Linux is built on it).
/// Every request carries the cluster API key; connections to a peer are reused and
/// bounded (`maxConnectionsPerPeer`); every request has a timeout.
public final class PeerTransport: Sendable {
    public static let apiKeyHeader = "X-API-Key"
    private let session: URLSession
    private let apiKey: String
    private let scheme: String

    public init(apiKey: String, timeout: Duration, maxConnectionsPerPeer: Int = 4, scheme: String = "http") {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout.seconds
        configuration.timeoutIntervalForResource = timeout.seconds * 4
        configuration.httpMaximumConnectionsPerHost = maxConnectionsPerPeer
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.urlCache = nil
        configuration.httpCookieStorage = nil
        session = URLSession(configuration: configuration)
        self.apiKey = apiKey
        self.scheme = scheme
    }

    deinit { session.invalidateAndCancel() }

    public struct Reply: Sendable {
        public let status: Int
        public let body: Data
    }

    public func request(_ peer: String, _ method: String, _ path: String, body: Data? = nil,
                        contentType: String = "application/json") async throws -> Reply {
        guard let url = URL(string: "\(scheme)://\(peer)\(path)") else {
            throw PeerError(peer: peer, status: nil, reason: "invalid peer address")
        }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.setValue(apiKey, forHTTPHeaderField: Self.apiKeyHeader)
        if let body {
            request.httpBody = body
            request.setValue(contentType, forHTTPHeaderField: "Content-Type")
        }
        return try await withCheckedThrowingContinuation { continuation in
            let task = session.dataTask(with: request) { data, response, error in
                if let error {
                    continuation.resume(throwing: PeerError(peer: peer, status: nil, reason: error.localizedDescription))
                    return
                }
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                continuation.resume(returning: Reply(status: status, body: data ?? Data()))
            }
            task.resume()
        }
    }

    /// A JSON request whose reply must be 2xx and decode as `T`.
    public func json<T: Decodable>(_ peer: String, _ method: String, _ path: String, body: (some Encodable)? = Optional<Int>.none,
                                   as type: T.Type) async throws -> T {
        let data = try body.map { try JSONEncoder().encode($0) }
        let reply = try await request(peer, method, path, body: data)
        guard (200..<300).contains(reply.status) else {
            let detail = (try? JSONDecoder().decode([String: String].self, from: reply.body))?["detail"] ?? ""
            throw PeerError(peer: peer, status: reply.status, reason: detail.isEmpty ? "request failed" : detail)
        }
        do {
            return try JSONDecoder().decode(T.self, from: reply.body)
        } catch {
            throw PeerError(peer: peer, status: reply.status, reason: "unexpected reply: \(error)")
        }
    }
}
