import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCore
import SecureConfJSON
import SecureConfStore

/// `/configs`: OpenSecureConf's create, read, update, delete and list. Each handler parses
/// the request, calls one `ConfigService` method and renders what it returns.
struct ConfigController<Context: AuditedRequestContext>: Sendable {
    let node: SecureConfNode

    private var service: ConfigService { node.service }

    @Sendable func create(_ request: Request, context: Context) async throws -> Response {
        let caller = try RequestInput.caller(request, context, node)
        let body = try await RequestInput.jsonObject(request, maxBytes: node.configuration.maxBodyBytes)
        guard let rawName = body["key"] else { throw ServiceError.unprocessable("key is required") }
        guard let name = rawName.stringValue else { throw ServiceError.unprocessable("key must be a string, not \(rawName.typeName)") }
        context.audit.target(key: name)
        let configKey = try RequestInput.validateKey(name)
        guard let value = body["value"] else { throw ServiceError.unprocessable("value is required") }
        let category = try RequestInput.category(body)
        let environment = try RequestInput.environment(try RequestInput.optionalString(body, "environment"))
        context.audit.target(environment: environment)
        let record = try await service.create(
            caller,
            RequestInput.entryAddress(context, environment: environment, key: configKey),
            category: category,
            value: value
        )
        return JSONResponse.make(.created) { $0.record(record) }
    }

    @Sendable func read(_ request: Request, context: Context) async throws -> Response {
        let (address, query) = try RequestInput.addressedEntry(request, context)
        let timestamps = try RequestInput.includesTimestamps(query)
        if let at = query["at"] {
            context.audit.action("read_at")
            let micros = try RequestInput.time(at, "at")
            let caller = try RequestInput.caller(request, context, node)
            let record = try await service.readAt(caller, address, at: micros, describingTime: Timestamp.iso8601(micros: micros))
            return JSONResponse.make { $0.record(record, timestamps: timestamps) }
        }
        let record = try await service.read(try RequestInput.caller(request, context, node), address)
        return JSONResponse.make { $0.record(record, timestamps: timestamps) }
    }

    @Sendable func update(_ request: Request, context: Context) async throws -> Response {
        let (address, _) = try RequestInput.addressedEntry(request, context)
        let caller = try RequestInput.caller(request, context, node)
        let body = try await RequestInput.jsonObject(request, maxBytes: node.configuration.maxBodyBytes)
        guard let value = body["value"] else { throw ServiceError.unprocessable("value is required") }
        let category = try RequestInput.category(body)
        let record = try await service.update(caller, address, category: category, value: value)
        return JSONResponse.make { $0.record(record) }
    }

    @Sendable func delete(_ request: Request, context: Context) async throws -> Response {
        let (address, _) = try RequestInput.addressedEntry(request, context)
        try await service.delete(try RequestInput.caller(request, context, node), address)
        return JSONResponse.message("Configuration '\(address.key)' deleted successfully")
    }

    /// A JSON array of the entries the caller's key decrypts, in creation order. Entries
    /// written under other user keys are left out (their count is in
    /// `X-SecureConf-Skipped`); if there are entries and none decrypts, the key is wrong: 401.
    /// `limit` (1–10000) with `offset` or `after` (the last `id` seen) pages through; the
    /// next `after` is in `X-SecureConf-Next-After`.
    @Sendable func list(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        func name(_ field: String) throws(ServiceError) -> String? {
            guard let raw = query[field], !raw.isEmpty else { return nil }
            return try RequestInput.validateName(raw, field: field)
        }
        func number(_ name: String, _ range: ClosedRange<Int>) throws(ServiceError) -> Int? {
            guard let raw = query[name], !raw.isEmpty else { return nil }
            guard let n = Int(raw), range.contains(n) else {
                throw ServiceError.unprocessable("\(name) must be a whole number in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        let listing = ListQuery(
            environment: try name("environment"),
            category: try name("category"),
            limit: try number("limit", 1...10_000),
            offset: try number("offset", 0...Int(Int32.max)) ?? 0,
            after: try number("after", 0...Int.max).map(Int64.init)
        )
        let timestamps = try RequestInput.includesTimestamps(query)
        let page = try await service.list(try RequestInput.caller(request, context, node), listing)
        var writer = JSONWriter(capacity: 64 + page.records.count * 256)
        writer.raw("[")
        for (i, record) in page.records.enumerated() {
            if i > 0 { writer.raw(",") }
            writer.record(record, timestamps: timestamps)
        }
        writer.raw("]")
        var headers: HTTPFields = [:]
        if page.skipped > 0 { headers[HTTPField.Name("X-SecureConf-Skipped")!] = String(page.skipped) }
        if let next = page.nextAfter { headers[HTTPField.Name("X-SecureConf-Next-After")!] = String(next) }
        return JSONResponse.make(.ok, writer.bytes, headers: headers)
    }
}
