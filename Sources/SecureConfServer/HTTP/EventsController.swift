import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SecureConfCore
import SecureConfJSON
import SecureConfStore
import ServiceLifecycle

/// OpenSecureConf 3.1's change events (`/sse/subscribe`, `/sse/stats`, `/sse/subscriptions`,
/// `/sse/health`) in its wire format, plus `POST /sse/ticket` for browsers' `EventSource`.
struct EventsController<Context: AuditedRequestContext>: Sendable {
    let node: SecureConfNode

    static var lastEventIDHeader: HTTPField.Name { HTTPField.Name("Last-Event-ID")! }

    var hub: ChangeEventHub { node.service.events! }

    /// `text/event-stream`: `connected`, then `created` / `updated` / `deleted` with ids
    /// `<node>.<seq>`, keep-alive comments; `reset` when it cannot resume where the client
    /// asked, `resync` before dropping a subscriber that fell behind.
    @Sendable func subscribe(_ request: Request, context: Context) async throws -> Response {
        let query = try RequestInput.query(request)
        func name(_ field: String) throws(ServiceError) -> String? {
            guard let raw = query[field], !raw.isEmpty else { return nil }
            return field == "key" ? try RequestInput.validateKey(raw) : try RequestInput.validateName(raw, field: field)
        }
        let filter = EventFilter(key: try name("key"), environment: try name("environment"), category: try name("category"))
        let ticket = query["ticket"]
        var caller = try RequestInput.caller(request, context, node, userKey: .optional)
        if ticket != nil { caller.userKey = nil }
        let lastEventID: String? =
            switch RequestInput.latin1Header(request, Self.lastEventIDHeader) {
            case .value(let v) where !v.isEmpty: v
            case .undecodable: "?"
            default: query["last_event_id"].flatMap { $0.isEmpty ? nil : $0 }
            }
        var headers: HTTPFields = [:]
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache, no-store"
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        // HEAD answers as GET would begin, without opening a stream (a ticket is checked, not spent).
        if request.method == .head {
            if let ticket, !hub.isValid(ticket: ticket, client: context.clientIP) {
                throw ServiceError(.invalidTicket, "Invalid, expired or already used event ticket")
            }
            return Response(status: .ok, headers: headers)
        }
        let subscription = try await node.service.subscribe(caller, filter: filter, lastEventID: lastEventID, ticket: ticket)
        let hub = self.hub
        let identity = node.identity
        let nodeID = node.configuration.nodeID
        let keepAlive = Duration.milliseconds(Int64(node.configuration.sseKeepAliveSeconds * 1000))
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody { writer in
                subscription.attach()
                var clientLeft = true
                do {
                    try await withGracefulShutdownHandler {
                        try await writer.write(Self.connected(subscription, nodeID: nodeID))
                        if let reset = subscription.reset {
                            try await writer.write(
                                Self.frame(
                                    event: "reset",
                                    data: Self.notice(reset.rawValue, reset.detail, lastEventID.flatMap { $0.utf8.count <= 512 ? $0 : nil })
                                )
                            )
                        }
                        var checked = ContinuousClock.now
                        streaming: while true {
                            let step = await subscription.next(timeout: keepAlive)
                            // A stream opened with a token lasts as long as the token does.
                            if let tokenID = subscription.filter.tokenID, ContinuousClock.now - checked >= .seconds(1) {
                                checked = ContinuousClock.now
                                if !(await identity.isLive(tokenID: tokenID)) {
                                    try await writer.write(Self.comment("the token was revoked or has expired"))
                                    clientLeft = false
                                    break streaming
                                }
                            }
                            switch step {
                            case .change(let id, let change, let payload):
                                try await writer.write(Self.change(id: id, change, payload: payload))
                            case .idle:
                                hub.keptAlive()
                                try await writer.write(Self.comment("keep-alive \(Timestamp.now())"))
                            case .keyExpired:
                                try await writer.write(
                                    Self.comment(
                                        "the user key was dropped after OSC_KEY_CACHE_TTL; values are null until you reconnect with X-User-Key"
                                    )
                                )
                            case .closed(.slowConsumer(let last)):
                                let detail =
                                    "This subscriber fell too far behind (OSC_SSE_QUEUE_SIZE); reconnect with Last-Event-ID to receive the rest."
                                try await writer.write(Self.frame(event: "resync", data: Self.notice("slow_consumer", detail, last)))
                                clientLeft = false
                                break streaming
                            case .closed(.shutdown):
                                try await writer.write(Self.comment("the node is shutting down"))
                                clientLeft = false
                                break streaming
                            }
                        }
                    } onGracefulShutdown: {
                        subscription.close(.shutdown)
                    }
                    try await writer.finish(nil)
                } catch {
                    hub.unsubscribe(subscription, clientLeft: clientLeft)
                    throw error
                }
                hub.unsubscribe(subscription, clientLeft: clientLeft)
            }
        )
    }

    /// `POST /sse/ticket`: `{"ticket", "expires_in"}`; the ticket opens one stream, once, from
    /// the same address, with this request's credentials (its `X-User-Key` included).
    @Sendable func ticket(_ request: Request, context: Context) async throws -> Response {
        let issued = try await node.service.eventTicket(try RequestInput.caller(request, context, node, userKey: .optional))
        var headers: HTTPFields = [:]
        headers[.cacheControl] = "no-store"
        return JSONResponse.make(headers: headers) { w in
            w.raw("{")
            w.member("ticket", first: true); w.string(issued.ticket)
            w.member("expires_in"); w.integer(issued.expiresInSeconds)
            w.raw("}")
        }
    }

    @Sendable func stats(_ request: Request, context: Context) async throws -> Response {
        JSONResponse.make(.ok, JSONWriter.encode(hub.statistics()))
    }

    @Sendable func subscriptions(_ request: Request, context: Context) async throws -> Response {
        JSONResponse.make(.ok, JSONWriter.encode(hub.subscriptionDetails()))
    }

    /// `{"status","active_subscriptions","total_events_sent"}`, without credentials (as OpenSecureConf).
    @Sendable func health(_ request: Request, context: some RequestContext) async throws -> Response {
        let health = hub.health()
        return JSONResponse.make { w in
            w.raw("{")
            w.member("status", first: true); w.string("healthy")
            w.member("active_subscriptions"); w.integer(health.active)
            w.member("total_events_sent"); w.integer(health.totalSent)
            w.raw("}")
        }
    }

    // MARK: - Frames

    static func frame(id: String? = nil, event: String, data: JSONValue) -> ByteBuffer {
        var text = ""
        if let id { text += "id: \(id)\n" }
        text += "event: \(event)\ndata: "
        var buffer = ByteBuffer(string: text)
        buffer.writeBytes(JSONWriter.encode(data))
        buffer.writeString("\n\n")
        return buffer
    }

    static func comment(_ text: String) -> ByteBuffer { ByteBuffer(string: ": \(text)\n\n") }

    static func optional(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }

    /// `connected`: the subscription and its filters (OpenSecureConf's members), and where the
    /// stream stands. A stream that starts from the present carries that position as its
    /// `id`, so a client that reconnects before any event still resumes without a gap.
    static func connected(_ s: EventSubscription, nodeID: String) -> ByteBuffer {
        let data: JSONValue = .object([
            ("subscription_id", .string(s.id)),
            (
                "filters",
                .object([("key", optional(s.filter.key)), ("environment", optional(s.filter.environment)), ("category", optional(s.filter.category))])
            ),
            ("server_time", .string(Timestamp.now())),
            ("node_id", .string(nodeID)),
            ("resumed", .bool(s.resumes)),
        ])
        return frame(id: s.resumes ? nil : s.startID, event: "connected", data: data)
    }

    static func change(id: String?, _ change: StoredChange, payload: JSONValue) -> ByteBuffer {
        let r = change.revision
        return frame(
            id: id,
            event: change.kind.rawValue,
            data: .object([
                ("key", .string(r.key)),
                ("environment", .string(r.environment)),
                ("category", optional(r.category)),
                ("timestamp", .string(Timestamp.iso8601(micros: r.updatedAt))),
                ("node_id", .string(r.origin)),
                ("data", payload),
            ])
        )
    }

    static func notice(_ reason: String, _ detail: String, _ lastEventID: String?) -> JSONValue {
        .object([("reason", .string(reason)), ("detail", .string(detail)), ("last_event_id", optional(lastEventID))])
    }
}
