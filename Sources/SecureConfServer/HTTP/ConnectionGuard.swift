import Foundation
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Synchronization

/// The node's connection budget: at most `maxTotal` open client connections, at most
/// `maxPerClient` from one address, shared by every event loop.
final class ConnectionLimits: Sendable {
    let maxTotal: Int
    let maxPerClient: Int
    private let state = Mutex<(total: Int, perClient: [String: Int])>((0, [:]))

    /// Whether an address is a current peer's (it follows a membership reload): the overall cap
    /// does not apply to them, so a flood of clients cannot cut the cluster's own traffic
    /// (the per-client cap still does).
    let isPeer: @Sendable (String) -> Bool

    init(maxTotal: Int, maxPerClient: Int, isPeer: @escaping @Sendable (String) -> Bool = { _ in false }) {
        self.maxTotal = max(1, maxTotal)
        self.maxPerClient = max(1, maxPerClient)
        self.isPeer = isPeer
    }

    /// Takes a place for a connection from `client`, or returns why there is none.
    func admit(_ client: String) -> String? {
        let peer = isPeer(client)
        return state.withLock { s in
            if s.total >= maxTotal && !peer { return "total" }
            if s.perClient[client, default: 0] >= maxPerClient { return "per_client" }
            s.total += 1
            s.perClient[client, default: 0] += 1
            return nil
        }
    }

    func release(_ client: String) {
        state.withLock { s in
            s.total -= 1
            let n = s.perClient[client, default: 1] - 1
            s.perClient[client] = n > 0 ? n : nil
        }
    }

    var open: Int { state.withLock { $0.total } }

    /// The default overall cap: the process's file-descriptor limit less room for the store,
    /// logs and peers, at most 16,384.
    static func defaultMaxTotal() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        let soft = limit.rlim_cur == rlim_t.max ? 16_384 : Int(clamping: limit.rlim_cur)
        return max(16, min(16_384, soft - 128))
    }
}

/// Per connection: refuses (closes) a connection beyond the budget, and closes one that
/// does not deliver a whole request in time: `requestTimeout` from the connection's
/// start to the end of its first request, and from each later request's head to its end
/// (between requests, the idle timeout applies). A slow sender cannot hold a place.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limits: ConnectionLimits
    private let requestTimeout: TimeAmount
    private let onRefused: @Sendable (String) -> Void
    private let onTimeout: @Sendable () -> Void
    private var client: String?
    private var admitted = false
    private var deadline: Scheduled<Void>?

    init(
        limits: ConnectionLimits,
        requestTimeout: TimeAmount,
        onRefused: @escaping @Sendable (String) -> Void,
        onTimeout: @escaping @Sendable () -> Void
    ) {
        self.limits = limits
        self.requestTimeout = requestTimeout
        self.onRefused = onRefused
        self.onTimeout = onTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard client == nil else { return }
        let address = context.channel.remoteAddress?.ipAddress ?? "unknown"
        client = address
        if let why = limits.admit(address) {
            onRefused(why)
            context.close(promise: nil)
            return
        }
        admitted = true
        arm(context)
    }

    private func arm(_ context: ChannelHandlerContext) {
        deadline?.cancel()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let onTimeout = self.onTimeout
        deadline = context.eventLoop.scheduleTask(in: requestTimeout) {
            onTimeout()
            loopBound.value.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            if deadline == nil { arm(context) }
        case .end:
            deadline?.cancel()
            deadline = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        if admitted, let client {
            admitted = false
            limits.release(client)
        }
        context.fireChannelInactive()
    }
}
