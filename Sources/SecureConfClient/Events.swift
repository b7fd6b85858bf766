import Foundation
import SecureConfHTTP
import SecureConfJSON
import Synchronization

/// One server-sent event of `/sse/subscribe`, as the node sent it.
public struct ClientEvent: Sendable, Equatable {
    /// `<node>.<seq>`; nil for a federated peer's relayed change.
    public var id: String?
    /// `connected`, `created`, `updated`, `deleted`, `reset` or `resync`.
    public var name: String
    public var data: JSONValue

    public var key: String? { data["key"]?.stringValue }
    public var environment: String? { data["environment"]?.stringValue }
    public var category: String? { data["category"]?.stringValue }
    /// Whether it says that a configuration changed.
    public var isChange: Bool { name == "created" || name == "updated" || name == "deleted" }
}

/// Which changes to follow; nil filters match everything.
public struct EventFilter: Sendable {
    public var key: String?
    public var environment: String?
    public var category: String?
    public init(key: String? = nil, environment: String? = nil, category: String? = nil) {
        self.key = key
        self.environment = environment
        self.category = category
    }
}

extension SecureConfClient {
    /// The node's change events, from `connected` on, until the stream ends (the node closed
    /// it, or the task was cancelled); the first node that answers is used. With
    /// `lastEventID`, the node resumes after it (or sends `reset`). Without `withValues` the user
    /// key is not sent: events carry no values (for callers that re-read on a change anyway).
    public func events(
        _ filter: EventFilter,
        lastEventID: String? = nil,
        withValues: Bool = true
    ) async throws(ClientError) -> AsyncThrowingStream<ClientEvent, any Error> {
        var headers = try headers(needsUserKey: false)
        if !withValues { headers.removeValue(forKey: "X-User-Key") }
        headers["Accept"] = "text/event-stream"
        if let lastEventID { headers["Last-Event-ID"] = lastEventID }
        let query = [("key", filter.key), ("environment", filter.environment), ("category", filter.category)]
        var lastError = ClientError(.unreachable, "no node to ask")
        for base in baseURLs {
            let target = try url(base, ["sse", "subscribe"], query)
            let stream = EventStreamTask(url: target, headers: headers.map { "\($0.key): \($0.value)" }, base: base, caFile: caFile)
            do {
                try await stream.opened()
                return stream.events
            } catch let error as ClientError {
                lastError = error
                if case .refused(let status) = error.kind, status != 503 { throw error }
            } catch {
                lastError = ClientError(.unreachable, "cannot reach \(base): \(error.localizedDescription)")
            }
        }
        throw lastError
    }
}

/// One streaming request on a thread of its own (libcurl blocks): parses the body as it
/// arrives into `ClientEvent`s; ends when the node ends it, the consumer goes away, or nothing
/// (not even a keep-alive) arrives for 90 seconds.
final class EventStreamTask: @unchecked Sendable {
    let events: AsyncThrowingStream<ClientEvent, any Error>
    private let continuation: AsyncThrowingStream<ClientEvent, any Error>.Continuation
    private let base: String
    private let state = Mutex(State())

    struct State {
        var cancelled = false
        var opened: CheckedContinuation<Void, any Error>?
        var openResult: Result<Void, ClientError>?
        var errorBody = Data()
        var line: [UInt8] = []
        var name: String?
        var data: [UInt8]?
        var id: String?
    }

    /// The longest line and event accepted, and the events held for a slow consumer: a node or
    /// proxy that sends more ends the stream with an error rather than exhaust memory.
    static let maxLineBytes = 4 << 20
    static let maxBufferedEvents = 10_000
    /// Keep-alives arrive every OSC_SSE_KEEPALIVE_SECONDS (at most 60).
    static let idleTimeoutSeconds = 90

    init(url: URL, headers: [String], base: String, caFile: String?) {
        (events, continuation) = AsyncThrowingStream.makeStream(
            of: ClientEvent.self,
            throwing: (any Error).self,
            bufferingPolicy: .bufferingOldest(Self.maxBufferedEvents)
        )
        self.base = base
        continuation.onTermination = { [self] _ in state.withLock { $0.cancelled = true } }
        let thread = Thread { [self] in
            let outcome = CurlHTTP.stream(
                url: url.absoluteString,
                headers: headers,
                connectTimeoutMillis: 5000,
                idleTimeoutSeconds: Self.idleTimeoutSeconds,
                caFile: caFile,
                onChunk: { [self] status, bytes in receive(status: status, bytes) },
                shouldStop: { [self] in state.withLock { $0.cancelled } }
            )
            finish(outcome)
        }
        thread.name = "secureconf-events"
        thread.start()
    }

    /// Returns once the node answered 200; throws its refusal otherwise.
    func opened() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let result = state.withLock { s -> Result<Void, ClientError>? in
                if let r = s.openResult { return r }
                s.opened = c
                return nil
            }
            if let result { c.resume(with: result) }
        }
    }

    private func settleOpen(_ result: Result<Void, ClientError>) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            guard s.openResult == nil else { return nil }
            s.openResult = result
            defer { s.opened = nil }
            return s.opened
        }
        waiter?.resume(with: result.mapError { $0 as any Error })
    }

    /// A piece of the body; false ends the transfer (the consumer is gone or overflowed).
    private func receive(status: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard status == 200 else {
            state.withLock { s in if s.errorBody.count < 65536 { s.errorBody.append(contentsOf: bytes) } }
            return true
        }
        settleOpen(.success(()))
        var parsed: [ClientEvent] = []
        var overflow = false
        let cancelled = state.withLock { s in
            for byte in bytes where !overflow {
                guard byte == UInt8(ascii: "\n") else {
                    s.line.append(byte)
                    if s.line.count > Self.maxLineBytes || (s.data?.count ?? 0) > Self.maxLineBytes { overflow = true }
                    continue
                }
                if s.line.last == UInt8(ascii: "\r") { s.line.removeLast() }
                let line = s.line
                s.line.removeAll(keepingCapacity: true)
                if line.isEmpty {
                    if let name = s.name ?? (s.data != nil ? "message" : nil) {
                        let value = s.data.flatMap { try? JSONParser.parse($0, maxDepth: 512) } ?? .null
                        parsed.append(ClientEvent(id: s.id, name: name, data: value))
                    }
                    (s.name, s.data, s.id) = (nil, nil, nil)
                    continue
                }
                if line.first == UInt8(ascii: ":") { continue }
                let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.endIndex
                let field = String(decoding: line[..<colon], as: UTF8.self)
                var value = colon < line.endIndex ? Array(line[line.index(after: colon)...]) : []
                if value.first == UInt8(ascii: " ") { value.removeFirst() }
                switch field {
                case "event": s.name = String(decoding: value, as: UTF8.self)
                case "data": s.data = s.data.map { $0 + [UInt8(ascii: "\n")] + value } ?? value
                case "id": s.id = String(decoding: value, as: UTF8.self)
                default: break
                }
            }
            return s.cancelled
        }
        for event in parsed {
            if case .dropped = continuation.yield(event) { overflow = true }
        }
        if overflow {
            continuation.finish(
                throwing: ClientError(
                    .unusable,
                    "the event stream from \(base) sent more than this client holds (a line over 4 MiB, or 10,000 unread events)"
                )
            )
            return false
        }
        return !cancelled
    }

    /// The transfer is over.
    private func finish(_ outcome: Result<(status: Int, ended: String?), CurlFailure>) {
        let (cancelled, body) = state.withLock { ($0.cancelled, $0.errorBody) }
        switch outcome {
        case .failure(let failure):
            let error = ClientError(.unreachable, "cannot reach \(base): \(failure.reason)")
            settleOpen(.failure(error))
            continuation.finish(throwing: error)
        case .success(let reply) where reply.status != 200:
            let refusal = ClientError(.refused(status: reply.status), SecureConfClient.detail(body))
            settleOpen(.failure(refusal))
            continuation.finish(throwing: refusal)
        case .success(let reply):
            settleOpen(.failure(ClientError(.unreachable, "event stream from \(base) ended")))
            if let ended = reply.ended, !cancelled {
                continuation.finish(throwing: ClientError(.unreachable, "event stream from \(base) ended: \(ended)"))
            } else {
                continuation.finish()
            }
        }
    }
}
