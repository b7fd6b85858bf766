import Foundation
import Logging

/// How a node without a salt gets the cluster's: it asks its peers; if nobody has one, the
/// node whose id sorts first generates it and the others fetch it, retrying until they do.
public enum SaltBootstrap {
    public struct Failed: Error, CustomStringConvertible {
        public let description: String
    }

    public enum Outcome: Sendable {
        /// A peer's salt, to be written to the local salt file.
        case fetched([UInt8], from: String)
        /// No peer has a salt and this node sorts first: it must generate one.
        case generate
    }

    public static func obtain(settings: ClusterSettings, transport: any PeerTransporting, saltLength: Int, logger: Logger) async throws -> Outcome {
        let deadline = ContinuousClock.now + settings.saltWait
        let first = settings.allNodes.first == settings.nodeID
        var attempt = 0
        while true {
            attempt += 1
            var refusals: [String] = []
            for peer in settings.peers {
                guard let reply = try? await transport.request(peer, "GET", "/cluster/salt") else { continue }
                if reply.status == 200 {
                    let salt = [UInt8](reply.body)
                    guard salt.count == saltLength else {
                        throw Failed(description: "peer \(peer) served a salt of \(salt.count) bytes (expected \(saltLength)); refusing it")
                    }
                    return .fetched(salt, from: peer)
                }
                if reply.status == 401 {
                    refusals.append(
                        "peer \(peer) refused our peer credential when asked for the salt (\(String(decoding: reply.body.prefix(300), as: UTF8.self))): OSC_CLUSTER_SECRET must be the same on every node, and the clocks within the signed messages' window"
                    )
                    continue
                }
                if reply.status == 403 {
                    throw Failed(description: "peer \(peer) refused our API key when asked for the salt: OSC_API_KEY must be the same on every node")
                }
            }
            // Never create a salt while a peer that has one refuses us: ours would differ.
            if !refusals.isEmpty, first || ContinuousClock.now >= deadline {
                throw Failed(description: refusals.joined(separator: "; "))
            }
            if first { return .generate }
            if ContinuousClock.now >= deadline {
                throw Failed(
                    description:
                        "no peer could give a salt within \(Int(settings.saltWait.seconds)) s; start \(settings.allNodes.first ?? "the first node") (it creates the salt) or copy the salt file from a node"
                )
            }
            if attempt == 1 || attempt % 20 == 0 {
                logger.notice("waiting for the cluster's salt", metadata: ["creator": "\(settings.allNodes.first ?? "")"])
            }
            try await Task.sleep(for: .milliseconds(500))
        }
    }
}
