import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCore
import SecureConfJSON
import SecureConfStore

/// OpenSecureConf 3.x's `/stats` (what the caller's user key opens, counted) and
/// `/stats/operations` (the node's operation counters as JSON, for operators).
struct StatsController<Context: AuditedRequestContext>: Sendable {
    let node: SecureConfNode

    /// `{"total_keys","total_categories","total_environments","keys_by_category","keys_by_environment"}`.
    @Sendable func stats(_ request: Request, context: Context) async throws -> Response {
        let stats = try await node.service.statistics(try RequestInput.caller(request, context, node))
        func counts(_ d: [String: Int]) -> JSONValue { .object(d.sorted { $0.key < $1.key }.map { ($0.key, .number(String($0.value))) }) }
        return JSONResponse.make { w in
            w.raw("{")
            w.member("total_keys", first: true); w.integer(stats.totalKeys)
            w.member("total_categories"); w.integer(stats.keysByCategory.count)
            w.member("total_environments"); w.integer(stats.keysByEnvironment.count)
            w.member("keys_by_category"); w.write(counts(stats.keysByCategory))
            w.member("keys_by_environment"); w.write(counts(stats.keysByEnvironment))
            w.raw("}")
        }
    }

    /// `{"cluster_mode","is_replica","all_nodes_synced","nodes_distribution":[{"node_id","is_local",
    /// "is_healthy","keys_count"}]}`: counts of what the caller's key opens on each node; 400
    /// without clustering, as OpenSecureConf answers.
    @Sendable func distribution(_ request: Request, context: Context) async throws -> Response {
        let d = try await node.service.distribution(try RequestInput.caller(request, context, node))
        let replica = d.mode == "replica"
        let synced = d.nodes.allSatisfy { $0.isHealthy && $0.keysCount == d.nodes.first?.keysCount }
        return JSONResponse.make { w in
            w.raw("{")
            w.member("cluster_mode", first: true); w.string(d.mode)
            w.member("is_replica"); w.raw(replica ? "true" : "false")
            w.member("all_nodes_synced"); w.raw(replica ? (synced ? "true" : "false") : "null")
            w.member("nodes_distribution"); w.raw("[")
            for (i, n) in d.nodes.enumerated() {
                if i > 0 { w.raw(",") }
                w.raw("{")
                w.member("node_id", first: true); w.string(n.nodeID)
                w.member("is_local"); w.raw(n.isLocal ? "true" : "false")
                w.member("is_healthy"); w.raw(n.isHealthy ? "true" : "false")
                w.member("keys_count"); w.integer(n.keysCount)
                w.raw("}")
            }
            w.raw("]}")
        }
    }

    /// `[{"key","category","environment","created_at","updated_at"}]`: the entries the caller's
    /// key opens (no values), filtered by `category` and `environment`.
    @Sendable func clusterConfigs(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        func name(_ field: String) throws(ServiceError) -> String? {
            guard let raw = query[field], !raw.isEmpty else { return nil }
            return try RequestInput.validateName(raw, field: field)
        }
        let listing = ListQuery(environment: try name("environment"), category: try name("category"))
        let page = try await node.service.list(try RequestInput.caller(request, context, node), listing)
        return JSONResponse.make { w in
            w.raw("[")
            for (i, record) in page.records.enumerated() {
                if i > 0 { w.raw(",") }
                let e = record.entry
                w.raw("{")
                w.member("key", first: true); w.string(e.key)
                w.member("category"); w.optionalString(e.category)
                w.member("environment"); w.string(e.environment)
                w.member("created_at"); w.string(Timestamp.iso8601(micros: e.createdAt))
                w.member("updated_at"); w.string(Timestamp.iso8601(micros: e.updatedAt))
                w.raw("}")
            }
            w.raw("]")
        }
    }

    /// `{"read_operations":{status:n},"write_operations":{"<operation>_<status>":n},
    /// "encryption_operations":{operation:n},"total_http_requests":{"<method>_<endpoint>_<status>":n}}`,
    /// read from the node's own metrics as OpenSecureConf does (counters above zero only).
    @Sendable func operations(_ request: Request, context: Context) async throws -> Response {
        var families: [String: [(String, Int)]] = [:]
        let text = String(decoding: node.metrics.render(), as: UTF8.self)
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let open = line.firstIndex(of: "{"), let close = line.lastIndex(of: "}"), open < close else { continue }
            let name = String(line[..<open])
            guard let value = Double(line[line.index(after: close)...].trimmingCharacters(in: .whitespaces)), value > 0, value < 1e15 else {
                continue
            }
            var labels: [String: String] = [:]
            for pair in line[line.index(after: open)..<close].split(separator: ",") {
                guard let eq = pair.firstIndex(of: "=") else { continue }
                labels[String(pair[..<eq])] = String(pair[pair.index(after: eq)...]).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
            let key: String
            switch name {
            case "osc_config_read_operations_total": key = labels["status"] ?? "unknown"
            case "osc_config_write_operations_total": key = "\(labels["operation"] ?? "unknown")_\(labels["status"] ?? "unknown")"
            case "osc_encryption_operations_total": key = labels["operation"] ?? "unknown"
            case "osc_http_requests_total":
                key = "\(labels["method"] ?? "unknown")_\(labels["endpoint"] ?? "unknown")_\(labels["status_code"] ?? "unknown")"
            default: continue
            }
            families[name, default: []].append((key, Int(value)))
        }
        func object(_ name: String) -> JSONValue {
            .object((families[name] ?? []).sorted { $0.0 < $1.0 }.map { ($0.0, .number(String($0.1))) })
        }
        return JSONResponse.make { w in
            w.raw("{")
            w.member("read_operations", first: true); w.write(object("osc_config_read_operations_total"))
            w.member("write_operations"); w.write(object("osc_config_write_operations_total"))
            w.member("encryption_operations"); w.write(object("osc_encryption_operations_total"))
            w.member("total_http_requests"); w.write(object("osc_http_requests_total"))
            w.raw("}")
        }
    }
}
