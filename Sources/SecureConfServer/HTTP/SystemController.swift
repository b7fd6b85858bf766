import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SecureConfCluster
import SecureConfCore
import SecureConfCrypto
import SecureConfJSON

/// Service information, health, readiness, metrics, and the single-node cluster endpoints.
struct SystemController<Context: RequestContext>: Sendable {
    let node: SecureConfNode

    /// The OpenAPI 3.1 document, generated from the route table.
    @Sendable func openAPI(_ request: Request, context: Context) async throws -> Response {
        let routes = RouteTable.routes(node: node)
        return JSONResponse.make(.ok, JSONWriter.encode(OpenAPIDocument.build(routes, version: SecureConfVersion.string)))
    }

    @Sendable func docs(_ request: Request, context: Context) async throws -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "text/html; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: OpenAPIDocument.docsPage))
        )
    }

    @Sendable func health(_ request: Request, context: Context) async throws -> Response {
        JSONResponse.make { $0.raw(#"{"status":"healthy"}"#) }
    }

    @Sendable func info(_ request: Request, context: Context) async throws -> Response {
        let c = node.configuration
        return JSONResponse.make { w in
            w.raw("{")
            w.member("service", first: true); w.string("SecureConf")
            w.member("name"); w.string("SecureConf (OpenSecureConf-compatible API)")
            w.member("version"); w.string(SecureConfVersion.string)
            w.member("status"); w.string("operational")
            w.member("features")
            w.write(
                .array(
                    [
                        "encryption:fernet+pbkdf2-sha256", "environments", "categories", "derived-key-cache",
                        "group-commit", "revisions", "history", "rollback", "diff:json-patch", "point-in-time",
                        c.auditEnabled ? "audit:hash-chained" : nil, "metrics:prometheus",
                    ].compactMap { $0.map { .string($0) } }
                )
            )
            w.member("api_key_required"); w.raw(c.apiKeyRequired ? "true" : "false")
            w.member("cluster_enabled"); w.raw(c.clusterEnabled ? "true" : "false")
            w.member("cluster_mode"); w.optionalString(c.clusterEnabled ? c.clusterMode.rawValue : nil)
            w.member("node_id"); w.string(c.nodeID)
            w.member("cluster")
            w.raw("{"); w.member("enabled", first: true); w.raw(c.clusterEnabled ? "true" : "false"); w.raw("}")
            w.member("endpoints")
            w.write(.object(RouteTable.listing(RouteTable.routes(node: node)).map { ($0.0, JSONValue.string($0.1)) }))
            w.raw("}")
        }
    }

    @Sendable func ready(_ request: Request, context: Context) async throws -> Response {
        try node.ensureServing()
        if node.configuration.authMode == .tokens { try node.identity.ensureReady() }
        if let refusal = await node.store.writeRefusal() {
            throw ServiceError(.storageUnavailable, "Not ready: \(refusal)", retryAfter: 5)
        }
        // A node whose clock runs ahead refuses writes and cannot exchange signed messages
        // with its peers: out of the load balancer until its clock is corrected.
        try node.ensureClockAllowsWrites()
        if node.cluster?.isShuttingDown == true {
            throw ServiceError(.shuttingDown, "Not ready: this node is shutting down", retryAfter: 1)
        }
        return JSONResponse.make { w in
            w.raw("{"); w.member("ready", first: true); w.raw("true")
            w.member("entries"); w.integer(node.store.liveEntryCount)
            w.member("storage"); w.string(node.store.engine)
            w.raw("}")
        }
    }

    @Sendable func metrics(_ request: Request, context: Context) async throws -> Response {
        node.metrics.configEntries.set(to: Double(node.store.liveEntryCount))
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: node.metrics.render()))
        )
    }

    @Sendable func clusterHealth(_ request: Request, context: Context) async throws -> Response {
        let reply = PeerHealthReply.now(nodeID: node.configuration.nodeID, saltFingerprint: node.saltFingerprint)
        return JSONResponse.make(.ok, Array(try JSONEncoder().encode(reply)))
    }

    @Sendable func clusterStatus(_ request: Request, context: Context) async throws -> Response {
        let c = node.configuration
        let formatter = ISO8601DateFormatter()
        func date(_ d: Date?, _ w: inout JSONWriter) { if let d { w.string(formatter.string(from: d)) } else { w.raw("null") } }
        let peers = node.cluster?.peerStatuses ?? []
        var depths: [String: Int] = [:]
        var oldest: [String: Int64] = [:]
        for p in peers {
            depths[p.nodeID] = (try? await node.replicated?.outboxDepth(after: p.ackedSeq)) ?? p.outboxDepth
            if let t = try? await node.replicated?.oldestOwnRevisionTime(after: p.ackedSeq) { oldest[p.nodeID] = t }
        }
        let nowMicros = Int64(Date().timeIntervalSince1970 * 1_000_000)
        let setAside = node.cluster == nil ? 0 : ((try? await node.replicated?.setAsideCount()) ?? 0)
        let settings = c.clusterSettings
        let peerAuth: (mode: String, warning: String?) =
            switch (settings?.credential != nil, settings?.acceptAPIKeyPeers ?? false) {
            case (true, false): ("secret", nil)
            case (true, true):
                (
                    "secret+api-key",
                    "OSC_CLUSTER_ACCEPT_API_KEY_PEERS=true: unsigned peers holding the clients' API key are still accepted; turn it off once every node has OSC_CLUSTER_SECRET"
                )
            default:
                (
                    "api-key",
                    "peers authenticate with OSC_API_KEY, which every client holds: any client can read the salt and ciphertexts and forge replicated revisions. Set OSC_CLUSTER_SECRET on every node (README: production checklist)"
                )
            }
        let clock: (offsetMillis: Int64?, ahead: Bool) = node.cluster?.clockStatus ?? (nil, false)
        // The revision-set digest (a hash of ciphertext hashes, nothing secret): what operators
        // compare across nodes, now that /cluster/digest is for peers only.
        let digest = node.cluster == nil ? nil : try? await node.replicated?.digest()
        let consistency: (consistent: Bool, reason: String?) = node.cluster?.saltIsConsistent ?? (true, nil)
        let maxSkewMillis = Int64(c.clusterMaxClockSkewSeconds * 1000)
        return JSONResponse.make { w in
            w.raw("{")
            w.member("enabled", first: true); w.raw(c.clusterEnabled ? "true" : "false")
            w.member("mode"); w.optionalString(c.clusterEnabled ? c.clusterMode.rawValue : nil)
            w.member("node_id"); w.string(c.nodeID)
            w.member("total_nodes"); w.integer(peers.count + 1)
            w.member("healthy_nodes"); w.integer(peers.filter(\.healthy).count + (consistency.consistent ? 1 : 0))
            w.member("salt_fingerprint"); w.string(node.saltFingerprint)
            w.member("salt_consistent"); w.raw(consistency.consistent ? "true" : "false")
            if let reason = consistency.reason { w.member("salt_problem"); w.string(reason) }
            w.member("last_sync"); date(node.cluster?.lastSync, &w)
            w.member("entries"); w.integer(node.store.liveEntryCount)
            if c.clusterEnabled {
                w.member("peer_authentication"); w.string(peerAuth.mode)
                if let warning = peerAuth.warning { w.member("peer_authentication_warning"); w.string(warning) }
                w.member("clock_offset_ms"); if let o = clock.offsetMillis { w.integer(Int(o)) } else { w.raw("null") }
                w.member("clock_ahead"); w.raw(clock.ahead ? "true" : "false")
                w.member("max_clock_skew_seconds"); w.write(.number(String(c.clusterMaxClockSkewSeconds)))
                w.member("set_aside_revisions"); w.integer(setAside)
                if let digest {
                    w.member("digest"); w.string(digest.digest)
                    w.member("revisions"); w.integer(digest.revisions)
                }
                if let horizon = c.tombstoneHorizonSeconds, let cluster = node.cluster {
                    let collection = cluster.collectionStatus
                    w.member("tombstone_horizon_seconds"); w.write(.number(String(horizon)))
                    w.member("collected_keys"); w.integer(digest?.collectedKeys ?? 0)
                    w.member("collected_digest"); w.optionalString(digest?.collected)
                    w.member("last_contact"); date(collection.lastContact, &w)
                    w.member("refilled_at"); date(collection.rejoinedAt, &w)
                    w.member("refill_set_aside_revisions"); w.integer(collection.setAside)
                }
            }
            w.member("nodes"); w.raw("[")
            w.raw("{"); w.member("node_id", first: true); w.string(c.nodeID)
            // `is_healthy` as OpenSecureConf 3.x names it; `healthy` as SecureConf always has.
            w.member("healthy"); w.raw(consistency.consistent ? "true" : "false")
            w.member("is_healthy"); w.raw(consistency.consistent ? "true" : "false"); w.member("self"); w.raw("true")
            w.member("salt_fingerprint"); w.string(node.saltFingerprint); w.raw("}")
            for p in peers {
                w.raw(",{"); w.member("node_id", first: true); w.string(p.nodeID)
                w.member("healthy"); w.raw(p.healthy ? "true" : "false")
                w.member("is_healthy"); w.raw(p.healthy ? "true" : "false")
                w.member("self"); w.raw("false")
                w.member("last_seen"); date(p.lastSeen, &w)
                w.member("last_sync"); date(p.lastSync, &w)
                w.member("outbox_depth"); w.integer(depths[p.nodeID] ?? p.outboxDepth)
                w.member("acked_seq"); w.integer(p.ackedSeq)
                w.member("salt_fingerprint"); w.optionalString(p.saltFingerprint)
                w.member("last_error"); w.optionalString(p.lastError ?? p.replicationError)
                w.member("replication_error"); w.optionalString(p.replicationError)
                w.member("replication_error_at"); date(p.replicationErrorAt, &w)
                w.member("outbox_oldest_age_seconds")
                if let t = oldest[p.nodeID] { w.write(.number(String(Double(max(0, nowMicros - t) / 1000) / 1000))) } else { w.raw("null") }
                w.member("clock_offset_ms"); if let o = p.clockOffsetMillis { w.integer(Int(o)) } else { w.raw("null") }
                // The peer's clock is off from this node's by more than the skew allowed.
                w.member("clock_skewed")
                w.raw(p.clockOffsetMillis.map { $0.magnitude > UInt64(maxSkewMillis) } == true ? "true" : "false")
                w.member("refused_by_peer"); w.integer(p.refusedByPeer)
                w.raw("}")
            }
            w.raw("]")
            w.raw("}")
        }
    }

    /// The raw salt, for peers holding the API key (OpenSecureConf's salt-sync endpoint).
    @Sendable func salt(_ request: Request, context: Context) async throws -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: "application/octet-stream",
                .contentDisposition: "attachment; filename=encryption.salt",
            ],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: node.salt))
        )
    }

    /// Accepts a salt only if it equals the one in use: a salt is never replaced.
    @Sendable func receiveSalt(_ request: Request, context: Context) async throws -> Response {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: 4096)
        } catch {
            throw ServiceError(.bodyTooLarge, "A salt is \(SaltFile.length) bytes; the body is larger than 4096")
        }
        try node.nodeSalt.accept(buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? [])
        return JSONResponse.make { w in
            w.raw(#"{"message":"Salt already present and matches","status":"ok"}"#)
        }
    }
}
