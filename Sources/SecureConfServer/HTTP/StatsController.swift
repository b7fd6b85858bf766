import Foundation
import HTTPTypes
import Hummingbird
import SecureConfCore
import SecureConfJSON

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
