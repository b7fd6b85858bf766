import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCore
import SecureConfJSON

/// OpenSecureConf 3.1's `POST /backup` and `POST /import`, in its format (`OSCBackup`).
struct BackupController<Context: AuditedRequestContext>: Sendable {
    let node: SecureConfNode

    static var passwordHeader: HTTPField.Name { HTTPField.Name("X-Backup-Password")! }

    private func password(_ request: Request) throws(ServiceError) -> String {
        guard let value = request.headers[Self.passwordHeader], !value.isEmpty else {
            throw ServiceError.unprocessable("X-Backup-Password header is required")
        }
        return value
    }

    /// `{"backup_data","total_keys","backup_timestamp","backup_id"}`.
    @Sendable func backup(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        func name(_ field: String) throws(ServiceError) -> String? {
            guard let raw = query[field], !raw.isEmpty else { return nil }
            return try RequestInput.validateName(raw, field: field)
        }
        let (environment, category) = (try name("environment"), try name("category"))
        let caller = try RequestInput.caller(request, context, node)
        let result = try await node.service.backup(caller, password: try password(request), environment: environment, category: category)
        return JSONResponse.make { w in
            w.raw("{")
            w.member("backup_data", first: true); w.string(result.backupData)
            w.member("total_keys"); w.integer(result.totalKeys)
            w.member("backup_timestamp"); w.string(result.timestamp)
            w.member("backup_id"); w.string(result.backupID)
            w.raw("}")
        }
    }

    /// `backup_data` and `overwrite` from the query (OpenSecureConf's Python client) or a JSON
    /// body (its JS client); `{"message","backup_id","backup_timestamp","total_in_backup",
    /// "imported","skipped","failed","failed_keys":[{"key","error"}]}`.
    @Sendable func importBackup(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        let body = try await RequestInput.optionalJSONObject(request, maxBytes: node.configuration.maxBodyBytes)
        func field(_ name: String) -> JSONValue? {
            if case .object(let members)? = body, let value = members.last(where: { $0.0 == name })?.1 { return value }
            return query[name].map(JSONValue.string)
        }
        guard let data = field("backup_data")?.stringValue, !data.isEmpty else { throw ServiceError.unprocessable("backup_data is required") }
        let overwrite: Bool
        switch field("overwrite") {
        case nil, .null?: overwrite = false
        case .bool(let b)?: overwrite = b
        case .string(let s)? where ["true", "1", "yes", "on"].contains(s.lowercased()): overwrite = true
        case .string(let s)? where ["false", "0", "no", "off", ""].contains(s.lowercased()): overwrite = false
        default: throw ServiceError.unprocessable("overwrite must be true or false")
        }
        let caller = try RequestInput.caller(request, context, node)
        let report = try await node.service.importBackup(caller, backupData: data, password: try password(request), overwrite: overwrite)
        return JSONResponse.make { w in
            w.raw("{")
            w.member("message", first: true); w.string("Import completed")
            w.member("backup_id"); w.string(report.backupID)
            w.member("backup_timestamp"); w.string(report.backupTimestamp)
            w.member("total_in_backup"); w.integer(report.totalInBackup)
            w.member("imported"); w.integer(report.imported)
            w.member("skipped"); w.integer(report.skipped)
            w.member("failed"); w.integer(report.failed.count)
            w.member("failed_keys")
            w.write(.array(report.failed.map { .object([("key", .string($0.key)), ("error", .string($0.error))]) }))
            w.raw("}")
        }
    }
}
