import Foundation
import SecureConfJSON

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// One configuration entry as a client reads it: the value is the JSON the writer stored.
public struct Entry: Sendable, Equatable {
    public var key: String
    public var environment: String
    public var category: String?
    public var value: JSONValue

    public init(key: String, environment: String, category: String?, value: JSONValue) {
        self.key = key
        self.environment = environment
        self.category = category
        self.value = value
    }
}

extension SecureConfClient {
    /// Every entry of the client's environment (optionally of one category) that the user key
    /// opens, in the node's order (creation order).
    public func entries(category: String? = nil) async throws(ClientError) -> [Entry] {
        let data = try await send(.list(category: category))
        guard let parsed = try? JSONParser.parse(Array(data), maxDepth: 512), case .array(let records) = parsed else {
            throw ClientError(.unreachable, "unexpected reply to GET /configs")
        }
        return try records.map { record throws(ClientError) in
            guard let key = record["key"]?.stringValue, let environment = record["environment"]?.stringValue, let value = record["value"] else {
                throw ClientError(.unreachable, "unexpected record in the reply to GET /configs")
            }
            return Entry(key: key, environment: environment, category: record["category"]?.stringValue, value: value)
        }
    }
}
