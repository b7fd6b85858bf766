import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCore
import SecureConfJSON
import SecureConfStore

/// Version history, version reads, rollback, diff and environment restore, over the store's
/// append-only revisions (a rollback or a restore writes new revisions). Each handler
/// parses the request, calls one `ConfigService` method and renders what it returns.
struct HistoryController<Context: AuditedRequestContext>: Sendable {
    let node: SecureConfNode

    private var service: ConfigService { node.service }

    static func positive(_ query: [String: String], _ name: String) throws(ServiceError) -> Int {
        guard let raw = query[name], !raw.isEmpty else { throw ServiceError.unprocessable("\(name) is required") }
        guard let n = Int(raw), (1...Int(Int32.max)).contains(n) else {
            throw ServiceError.unprocessable("\(name) must be a version number, a whole number from 1")
        }
        return n
    }

    /// The key's versions, oldest first, without values: `{"key","environment","current_version",
    /// "pruned","versions":[{"version","created_at","deleted","origin_node","actor"}]}`.
    @Sendable func versions(_ request: Request, context: Context) async throws -> Response {
        let (address, _) = try RequestInput.addressedEntry(request, context)
        // Actors are shown to audit readers (the API key) and to callers whose key opens the entry.
        let caller = try RequestInput.caller(request, context, node, userKey: .optional)
        let listing = try await service.versions(caller, address)
        let history = listing.history
        return JSONResponse.make { w in
            w.raw("{")
            w.member("key", first: true); w.string(address.key)
            w.member("environment"); w.string(address.environment)
            w.member("current_version"); w.integer(history.versions.last?.version ?? history.prunedCount)
            w.member("pruned"); w.integer(history.prunedCount)
            w.member("versions"); w.raw("[")
            for (i, numbered) in history.versions.enumerated() {
                if i > 0 { w.raw(",") }
                let r = numbered.revision
                w.raw("{")
                w.member("version", first: true); w.integer(numbered.version)
                w.member("created_at"); w.string(Timestamp.iso8601(micros: r.updatedAt))
                w.member("deleted"); w.raw(r.deleted ? "true" : "false")
                w.member("origin_node"); w.string(r.origin)
                w.member("actor"); w.optionalString(listing.showsActors ? r.actor : nil)
                w.raw("}")
            }
            w.raw("]}")
        }
    }

    /// Version n's value in the record shape plus `version`.
    @Sendable func readVersion(_ request: Request, context: Context) async throws -> Response {
        let (address, _) = try RequestInput.addressedEntry(request, context)
        let caller = try RequestInput.caller(request, context, node)
        guard let raw = context.parameters.get("version"), let n = Int(raw), n >= 1 else {
            throw ServiceError.unprocessable("version must be a version number, a whole number from 1")
        }
        let record = try await service.readVersion(caller, address, version: n)
        return JSONResponse.make { $0.record(record) }
    }

    @Sendable func rollback(_ request: Request, context: Context) async throws -> Response {
        let (address, query) = try RequestInput.addressedEntry(request, context)
        let caller = try RequestInput.caller(request, context, node)
        let record = try await service.rollback(caller, address, to: try Self.positive(query, "version"))
        return JSONResponse.make { $0.record(record) }
    }

    /// `{"from","to","operations":[RFC 6902 operations]}`.
    @Sendable func diff(_ request: Request, context: Context) async throws -> Response {
        let (address, query) = try RequestInput.addressedEntry(request, context)
        let caller = try RequestInput.caller(request, context, node)
        let from = try Self.positive(query, "from")
        let to = try Self.positive(query, "to")
        let operations = try await service.diff(caller, address, from: from, to: to)
        return JSONResponse.make { w in
            w.raw("{")
            w.member("from", first: true); w.integer(from)
            w.member("to"); w.integer(to)
            w.member("operations"); w.write(.array(operations.map(\.json)))
            w.raw("}")
        }
    }

    @Sendable func restore(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        let environment = try RequestInput.environment(query["environment"])
        context.audit.target(environment: environment)
        let at = try RequestInput.time(query["at"], "at")
        let report = try await service.restore(try RequestInput.caller(request, context, node), environment: environment, at: at)
        return JSONResponse.make { w in
            func keys(_ list: [String]) { w.write(.array(list.map { .string($0) })) }
            w.raw("{")
            w.member("environment", first: true); w.string(report.environment)
            w.member("at"); w.string(Timestamp.iso8601(micros: report.at))
            w.member("restored"); keys(report.restored)
            w.member("recreated"); keys(report.recreated)
            w.member("deleted"); keys(report.deleted)
            w.member("unchanged"); w.integer(report.unchanged)
            // A count, never names: a caller learns nothing of keys its user key does not open.
            w.member("undecryptable"); w.integer(report.undecryptable)
            w.member("pruned"); keys(report.pruned)
            w.raw("}")
        }
    }

    /// `POST /rekey?environment=&purge=`: X-User-Key (the old key) and X-New-User-Key.
    @Sendable func rekey(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        let environment = try RequestInput.environment(query["environment"])
        context.audit.target(environment: environment)
        let caller = try RequestInput.caller(request, context, node)
        let newKey = try RequestInput.userKey(request, minimumLength: node.configuration.minUserKeyLength, header: RequestInput.newUserKeyHeader)
        let purge = try RequestInput.flag(query, "purge")
        let report = try await service.rekey(caller, environment: environment, newUserKey: newKey, purge: purge)
        return JSONResponse.make { w in
            w.raw("{")
            w.member("environment", first: true); w.string(report.environment)
            w.member("rekeyed"); w.write(.array(report.rekeyed.map { .string($0) }))
            // A count, never names: nothing is learnt of values under other user keys.
            w.member("other_keys"); w.integer(report.otherKeys)
            w.member("purged"); w.raw(purge ? "true" : "false")
            w.raw("}")
        }
    }
}
