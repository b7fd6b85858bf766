import Foundation
import SecureConfCluster
import SecureConfCrypto
import SecureConfJSON
import SecureConfStore
import Synchronization

/// Which changes a subscriber wants: every filter that is set must match (OpenSecureConf's rule).
public struct EventFilter: Sendable, Equatable {
    public var key: String?
    public var environment: String?
    public var category: String?

    public init(key: String? = nil, environment: String? = nil, category: String? = nil) {
        self.key = key
        self.environment = environment
        self.category = category
    }

    /// The subscriber's policy (`tokens` mode): only changes it allows `events` on are sent.
    public var policy: Policy?
    /// The subscriber's tenant: only its changes are sent.
    public var tenant = Revision.defaultTenant
    /// The token the stream was opened with: the stream ends once it is revoked.
    public var tokenID: String?

    public var isWildcard: Bool { key == nil && environment == nil && category == nil }

    func matches(_ r: Revision) -> Bool {
        r.tenant == tenant && (key == nil || key == r.key) && (environment == nil || environment == r.environment)
            && (category == nil || category == r.category)
            && (policy?.allows(.events, environment: r.environment, key: r.key) ?? true)
    }
}

/// Why a stream starts from the present instead of where the client asked to resume.
public enum EventReset: String, Sendable {
    /// The id was issued by another node (ids are per node).
    case otherNode = "other_node"
    /// Not an id this node issued (malformed, or beyond its newest change).
    case unknownEventID = "unknown_event_id"
    /// Changes after the id have left the retained history (`OSC_MAX_VERSIONS`, a rekey that
    /// purged, deleted keys collected by `OSC_TOMBSTONE_HORIZON`).
    case historyPruned = "history_pruned"

    public var detail: String {
        switch self {
        case .otherNode: "Last-Event-ID was issued by another node; events resume only on the node that issued them. Re-read the current state."
        case .unknownEventID: "Last-Event-ID is not an event id this node issued. Re-read the current state."
        case .historyPruned: "Changes after Last-Event-ID are no longer in the retained history. Re-read the current state."
        }
    }
}

/// How a stream ends on the node's side.
public enum EventStreamEnd: Sendable, Equatable {
    /// The subscriber fell `queueLimit` events behind: it is dropped, told the id of the last
    /// event it was sent, and resumes from there with `Last-Event-ID` (nothing is lost).
    case slowConsumer(lastEventID: String)
    /// The node is shutting down.
    case shutdown
}

/// What a stream does next.
public enum EventStreamStep: Sendable {
    /// A change; `id` is nil for a federated peer's change, which is relayed live only.
    case change(id: String?, change: StoredChange, payload: JSONValue)
    /// Nothing happened within the keep-alive interval.
    case idle
    /// The subscriber's derived key reached the key cache's lifetime and was dropped: values
    /// are `null` from now on (reconnect with the user key to receive them again).
    case keyExpired
    case closed(EventStreamEnd)
}

/// Tells the node's metrics what the event streams do.
public protocol EventObserver: Sendable {
    func subscriptionsChanged(active: Int)
    func eventSent(_ kind: ChangeKind)
    func subscriberRefused(reason: String)
}

/// The change-event streams of one node (`/sse/*`): reads the store's change feed once per
/// commit and fans it out to bounded per-subscriber queues; a stream that resumes replays
/// what it missed from the revision history first.
public final class ChangeEventHub: ChangeRelaying, Sendable {
    public struct Settings: Sendable {
        /// `OSC_SSE_MAX_SUBSCRIBERS`: streams beyond it get 503.
        public var maxSubscribers = 1000
        /// `OSC_SSE_QUEUE_SIZE`: events a subscriber may fall behind before it is dropped.
        public var queueLimit = 256
        /// How long a ticket from `POST /sse/ticket` opens a stream.
        public var ticketLifetime: Duration = .seconds(30)
        /// Tickets outstanding at once.
        public var maxTickets = 10_000
        /// How long a subscription keeps the subscriber's derived key (the key cache's TTL).
        public var keyLifetime: Duration = .seconds(300)

        public init() {}
    }

    public let nodeID: String
    public let settings: Settings
    let storage: any ConfigStorage
    let cipher: ValueCipher
    let observer: (any EventObserver)?
    private let state = Mutex(State())

    struct Ticket {
        let key: CachedKey?
        /// The issuer (`tokens` mode): its policy and tenant are in force on the stream it opens.
        let principal: Principal?
        let client: String
        let expires: ContinuousClock.Instant
    }

    struct State {
        /// How far the feed has been read and fanned out; nil until first read.
        var cursor: Int64?
        var subscribers: [String: EventSubscription] = [:]
        var tickets: [String: Ticket] = [:]
        var stats = Statistics()
        var shutDown = false
    }

    /// Counters in OpenSecureConf 3.1's `/sse/stats` shape.
    struct Statistics {
        var totalCreated = 0
        var totalClosed = 0
        var lastCreatedMicros: Int64?
        var eventsSent: [ChangeKind: Int] = [:]
        var totalSent = 0
        var subscribersDropped = 0
        var lastSentMicros: Int64?
        var keepAlives = 0
        var disconnections = 0
        var totalDurationSeconds = 0.0
        var maxQueueReached = 0
    }

    public init(nodeID: String, storage: any ConfigStorage, cipher: ValueCipher, settings: Settings, observer: (any EventObserver)? = nil) {
        self.nodeID = nodeID
        self.storage = storage
        self.cipher = cipher
        self.settings = settings
        self.observer = observer
    }

    // MARK: - The feed

    /// Reads the feed after every commit until cancelled (the node runs it as a service).
    public func run() async {
        while !Task.isCancelled {
            do {
                try await pump()
            } catch {
                // The store is closing or briefly unavailable: the next commit or tick retries.
            }
            await storage.commits.wait(timeout: .seconds(1))
            reapUnattached()
        }
    }

    /// A subscription whose response never started streaming (its request failed after the
    /// handler returned, or a HEAD) is removed after `attachGrace`.
    func reapUnattached(now: ContinuousClock.Instant = .now) {
        let stale = state.withLock { s in s.subscribers.values.filter { !$0.isAttached && now - $0.started > Self.attachGrace } }
        for sub in stale { unsubscribe(sub, clientLeft: true) }
    }

    static let attachGrace: Duration = .seconds(10)

    /// Reads everything committed since the last read and queues it for its subscribers.
    func pump() async throws {
        // Nobody listens: move the position to the newest change without reading the changes
        // (only while still nobody listens, so that a new subscriber misses nothing).
        if state.withLock({ $0.subscribers.isEmpty }) {
            let head = try await storage.lastChangeSeq()
            let skipped = state.withLock { s -> Bool in
                guard s.subscribers.isEmpty else { return false }
                s.cursor = max(s.cursor ?? 0, head)
                return true
            }
            if skipped { return }
        }
        var cursor = try await currentCursor()
        while true {
            let page = try await storage.changes(after: cursor, limit: 512)
            guard page.through > cursor else { return }
            let dropped = state.withLock { s -> [EventSubscription] in
                guard s.cursor == cursor else { return [] }
                s.cursor = page.through
                var dropped: [EventSubscription] = []
                for sub in s.subscribers.values {
                    if !sub.enqueue(page.changes, limit: settings.queueLimit, nodeID: nodeID) { dropped.append(sub) }
                }
                return dropped
            }
            for sub in dropped { drop(sub, reason: "slow_consumer") }
            cursor = page.through
        }
    }

    /// Changes of writes a federated peer took (they are not in this node's history): queued
    /// for live subscribers, without an id (a stream that resumes does not replay them).
    public func relayed(_ changes: [StoredChange], from peer: String) {
        let dropped = state.withLock { s in
            s.subscribers.values.filter { !$0.enqueue(changes, limit: settings.queueLimit, nodeID: nodeID, relayedFrom: peer) }
        }
        for sub in dropped { drop(sub, reason: "slow_consumer") }
    }

    /// The feed position, read from the store the first time.
    private func currentCursor() async throws -> Int64 {
        if let cursor = state.withLock({ $0.cursor }) { return cursor }
        let head = try await storage.lastChangeSeq()
        return state.withLock { s in
            if s.cursor == nil { s.cursor = head }
            return s.cursor!
        }
    }

    // MARK: - Subscribing

    /// Opens a stream. `lastEventID` resumes after an event this node issued, from the
    /// revision history; `reset` on the result says why it could not and the stream starts
    /// from the present instead.
    public func subscribe(filter: EventFilter, key: CachedKey?, lastEventID: String?) async throws(ServiceError) -> EventSubscription {
        let horizon: Int64
        do {
            _ = try await currentCursor()
            horizon = lastEventID == nil ? 0 : try await storage.changeFeedHorizon()
        } catch {
            throw ServiceError(.storageUnavailable, "The change feed cannot be read right now", retryAfter: 1)
        }
        let subscription: EventSubscription
        do {
            subscription = try register(filter: filter, key: key, lastEventID: lastEventID, horizon: horizon)
        } catch {
            if error.kind == .subscribersFull { observer?.subscriberRefused(reason: "limit") }
            throw error
        }
        observer?.subscriptionsChanged(active: activeCount)
        return subscription
    }

    private func register(filter: EventFilter, key: CachedKey?, lastEventID: String?, horizon: Int64) throws(ServiceError) -> EventSubscription {
        try state.withLock { s throws(ServiceError) -> EventSubscription in
            guard !s.shutDown else { throw ServiceError(.storageUnavailable, "The node is shutting down", retryAfter: 1) }
            guard s.subscribers.count < settings.maxSubscribers else {
                throw ServiceError(
                    .subscribersFull,
                    "Too many event subscribers on this node (OSC_SSE_MAX_SUBSCRIBERS=\(settings.maxSubscribers)); retry later or use another node",
                    retryAfter: 5
                )
            }
            // Validated against the position fanned out so far: every id a client holds is at or below it.
            let cursor = s.cursor ?? 0
            var resumeAfter: Int64?
            var reset: EventReset?
            if let lastEventID {
                switch parse(lastEventID) {
                case .none: reset = .unknownEventID
                case .some((let node, _)) where node != nodeID: reset = .otherNode
                case .some((_, let seq)) where seq > cursor: reset = .unknownEventID
                case .some((_, let seq)) where seq < horizon: reset = .historyPruned
                case .some((_, let seq)): resumeAfter = seq
                }
            }
            let sub = EventSubscription(
                hub: self,
                filter: filter,
                key: key,
                keyExpires: ContinuousClock.now.advanced(by: settings.keyLifetime),
                replay: resumeAfter.map { ($0, cursor) },
                position: resumeAfter ?? cursor,
                reset: reset
            )
            s.subscribers[sub.id] = sub
            s.stats.totalCreated += 1
            s.stats.lastCreatedMicros = Self.nowMicros()
            return sub
        }
    }

    /// Ends a stream (its client left, or the node closed it).
    public func unsubscribe(_ subscription: EventSubscription, clientLeft: Bool) {
        let removed = state.withLock { s -> Bool in
            guard s.subscribers.removeValue(forKey: subscription.id) != nil else { return false }
            s.stats.totalClosed += 1
            if clientLeft { s.stats.disconnections += 1 }
            s.stats.totalDurationSeconds += subscription.ageSeconds
            return true
        }
        subscription.forgetKey()
        if removed { observer?.subscriptionsChanged(active: activeCount) }
    }

    private func drop(_ subscription: EventSubscription, reason: String) {
        state.withLock { s in
            s.stats.subscribersDropped += 1
            s.stats.maxQueueReached = max(s.stats.maxQueueReached, settings.queueLimit)
        }
        observer?.subscriberRefused(reason: reason)
    }

    /// Closes every stream at once (SIGTERM) and refuses new ones.
    public func shutdown() {
        let all = state.withLock { s -> [EventSubscription] in
            s.shutDown = true
            return Array(s.subscribers.values)
        }
        for sub in all { sub.close(.shutdown) }
    }

    var activeCount: Int { state.withLock { $0.subscribers.count } }

    /// `<node>.<seq>`: the node id may itself contain dots; the sequence number never does.
    func parse(_ eventID: String) -> (String, Int64)? {
        guard eventID.utf8.count <= 512, let dot = eventID.lastIndex(of: ".") else { return nil }
        let digits = eventID[eventID.index(after: dot)...]
        guard !digits.isEmpty, digits.utf8.count <= 18, digits.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let seq = Int64(digits) else {
            return nil
        }
        return (String(eventID[..<dot]), seq)
    }

    func eventID(_ seq: Int64) -> String { "\(nodeID).\(seq)" }

    /// The event's `data` member for one subscriber: `{"value": …}` only when its key opens
    /// the value; `null` otherwise, and for deletes.
    func payload(_ change: StoredChange, key: CachedKey?) -> JSONValue {
        guard change.kind != .deleted, let key, let plaintext = cipher.tryDecrypt(change.revision.ciphertext, with: key) else { return .null }
        return .object([("value", ValueCipher.jsonValue(plaintext))])
    }

    func sent(_ kind: ChangeKind) {
        state.withLock { s in
            s.stats.eventsSent[kind, default: 0] += 1
            s.stats.totalSent += 1
            s.stats.lastSentMicros = Self.nowMicros()
        }
        observer?.eventSent(kind)
    }

    /// A keep-alive was sent on some stream.
    public func keptAlive() { state.withLock { $0.stats.keepAlives += 1 } }

    static func nowMicros() -> Int64 { Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()) }

    // MARK: - Tickets

    /// A single-use ticket that opens one stream within `ticketLifetime`, from the same
    /// client address, with the credentials it was issued under (for browsers' `EventSource`,
    /// which cannot send headers).
    public func issueTicket(key: CachedKey?, principal: Principal? = nil, client: String) throws(ServiceError) -> String {
        let ticket = Base64URL.encode(OpenSSL.randomBytes(32))
        let now = ContinuousClock.now
        try state.withLock { s throws(ServiceError) in
            s.tickets = s.tickets.filter { $0.value.expires > now }
            guard s.tickets.count < settings.maxTickets else {
                throw ServiceError(.subscribersFull, "Too many event tickets outstanding; retry shortly", retryAfter: 5)
            }
            s.tickets[Self.ticketName(ticket)] = Ticket(
                key: key,
                principal: principal,
                client: client,
                expires: now.advanced(by: settings.ticketLifetime)
            )
        }
        return ticket
    }

    /// Redeems a ticket (once): the key and principal it was issued with. 401 for a ticket
    /// that is unknown, used, expired, or presented from another address.
    public func redeem(ticket: String, client: String) throws(ServiceError) -> (key: CachedKey?, principal: Principal?) {
        let invalid = ServiceError(.invalidTicket, "Invalid, expired or already used event ticket")
        guard ticket.utf8.count <= 128 else { throw invalid }
        let name = Self.ticketName(ticket)
        let now = ContinuousClock.now
        // Spent only by its own client: a ticket seen elsewhere (a proxy log) cannot be burnt.
        let found = state.withLock { s -> Ticket? in
            guard let t = s.tickets[name], t.client == client else { return nil }
            s.tickets.removeValue(forKey: name)
            return t.expires > now ? t : nil
        }
        guard let found else { throw invalid }
        return (found.key, found.principal)
    }

    /// Whether `ticket` would open a stream for `client` (HEAD), without spending it.
    public func isValid(ticket: String, client: String) -> Bool {
        guard ticket.utf8.count <= 128 else { return false }
        let name = Self.ticketName(ticket)
        let now = ContinuousClock.now
        return state.withLock { s in s.tickets[name].map { $0.client == client && $0.expires > now } ?? false }
    }

    /// Tickets are held by their hash: a memory dump shows no usable ticket.
    static func ticketName(_ ticket: String) -> String { Hex.encode(OpenSSL.sha256(Array(ticket.utf8))) }

    // MARK: - Statistics

    /// `/sse/stats`, in OpenSecureConf 3.1's shape.
    public func statistics() -> JSONValue {
        let (stats, subs) = state.withLock { ($0.stats, Array($0.subscribers.values)) }
        var byKey: [String: Int] = [:]
        var byEnvironment: [String: Int] = [:]
        var byCategory: [String: Int] = [:]
        var wildcard = 0
        for sub in subs {
            if let k = sub.filter.key { byKey[k, default: 0] += 1 }
            if let e = sub.filter.environment { byEnvironment[e, default: 0] += 1 }
            if let c = sub.filter.category { byCategory[c, default: 0] += 1 }
            if sub.filter.isWildcard { wildcard += 1 }
        }
        func counts(_ d: [String: Int]) -> JSONValue { .object(d.sorted { $0.key < $1.key }.map { ($0.key, .number(String($0.value))) }) }
        func time(_ micros: Int64?) -> JSONValue { micros.map { .string(Timestamp.iso8601(micros: $0)) } ?? .null }
        func number(_ n: Int) -> JSONValue { .number(String(n)) }
        let average = stats.totalClosed > 0 ? stats.totalDurationSeconds / Double(stats.totalClosed) : 0
        return .object([
            (
                "subscriptions",
                .object([
                    ("total_created", number(stats.totalCreated)), ("active", number(subs.count)), ("closed", number(stats.totalClosed)),
                    ("wildcard", number(wildcard)), ("by_key", counts(byKey)), ("by_environment", counts(byEnvironment)),
                    ("by_category", counts(byCategory)), ("last_created_at", time(stats.lastCreatedMicros)),
                ])
            ),
            (
                "events",
                .object([
                    ("total_sent", number(stats.totalSent)),
                    ("by_type", .object([ChangeKind.created, .updated, .deleted].map { ($0.rawValue, number(stats.eventsSent[$0] ?? 0)) })),
                    ("dropped_queue_full", number(stats.subscribersDropped)),
                    ("last_sent_at", time(stats.lastSentMicros)),
                ])
            ),
            (
                "connection_health",
                .object([("keepalive_sent", number(stats.keepAlives)), ("disconnections_detected", number(stats.disconnections))])
            ),
            (
                "performance",
                .object([
                    ("average_subscription_duration_seconds", .number(String(format: "%.2f", average))),
                    ("max_queue_size_reached", number(stats.maxQueueReached)),
                ])
            ),
        ])
    }

    /// `/sse/subscriptions`, in OpenSecureConf 3.1's shape.
    public func subscriptionDetails() -> JSONValue {
        let subs = state.withLock { Array($0.subscribers.values) }.sorted { $0.createdMicros < $1.createdMicros }
        func text(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
        return .array(
            subs.map { sub in
                .object([
                    ("subscription_id", .string(sub.id)),
                    (
                        "filters",
                        .object([
                            ("key", text(sub.filter.key)), ("environment", text(sub.filter.environment)), ("category", text(sub.filter.category)),
                        ])
                    ),
                    ("created_at", .string(Timestamp.iso8601(micros: sub.createdMicros))),
                    ("duration_seconds", .number(String(format: "%.2f", sub.ageSeconds))),
                    ("queue_size", .number(String(sub.queueDepth))),
                    ("queue_max_size", .number(String(settings.queueLimit))),
                ])
            }
        )
    }

    /// `/sse/health`.
    public func health() -> (active: Int, totalSent: Int) { state.withLock { ($0.subscribers.count, $0.stats.totalSent) } }
}

/// One open stream: its filter, the subscriber's derived key (for as long as the key cache
/// would keep it), the history it still has to replay, and its bounded queue.
public final class EventSubscription: Sendable {
    public let id: String
    public let filter: EventFilter
    /// Why the stream could not resume where its client asked (nil when it did, or did not ask).
    public let reset: EventReset?
    /// The id of the newest change before this stream (where a fresh stream starts).
    public let startID: String
    /// Whether the stream first replays missed changes from history.
    public let resumes: Bool
    let createdMicros: Int64
    let started = ContinuousClock.now
    private let attached = Atomic<Bool>(false)
    private let hub: ChangeEventHub
    private let state: Mutex<State>

    /// A queued change: from this node's feed, or relayed from a federated peer.
    struct Queued {
        var change: StoredChange
        var peer: String?
    }

    struct State {
        var key: CachedKey?
        var keyExpires: ContinuousClock.Instant
        var keyExpiryReported = false
        /// Still to replay from history: after `from`, through `through`.
        var replay: (from: Int64, through: Int64)?
        var replayBuffer: [StoredChange] = []
        var queue: [Queued] = []
        var queueHead = 0
        /// The newest sequence number handed to the stream or queued for it.
        var position: Int64
        var closed: EventStreamEnd?
        var waiter: CheckedContinuation<Void, Never>?
        var woken = false
    }

    init(
        hub: ChangeEventHub,
        filter: EventFilter,
        key: CachedKey?,
        keyExpires: ContinuousClock.Instant,
        replay: (Int64, Int64)?,
        position: Int64,
        reset: EventReset?
    ) {
        self.id = UUID().uuidString.lowercased()
        self.hub = hub
        self.filter = filter
        self.reset = reset
        self.createdMicros = ChangeEventHub.nowMicros()
        self.startID = hub.eventID(position)
        self.resumes = replay.map { $0.0 < $0.1 } ?? false
        let replay = replay.flatMap { $0.0 < $0.1 ? (from: $0.0, through: $0.1) : nil }
        state = Mutex(State(key: key, keyExpires: keyExpires, replay: replay, position: replay?.through ?? position))
    }

    var ageSeconds: Double {
        let d = ContinuousClock.now - started
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// The response began streaming this subscription.
    public func attach() { attached.store(true, ordering: .relaxed) }
    var isAttached: Bool { attached.load(ordering: .relaxed) }

    var queueDepth: Int { state.withLock { $0.queue.count - $0.queueHead } }

    /// Queues the changes this subscriber wants; false when its queue is full (it is then
    /// closed, told to resume from the last event it was given).
    func enqueue(_ changes: [StoredChange], limit: Int, nodeID: String, relayedFrom peer: String? = nil) -> Bool {
        var ok = true
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard s.closed == nil else { return nil }
            var woke = false
            // This node's changes past its position; a peer's (their own sequence) all.
            for change in changes where (peer != nil || change.seq > s.position) && filter.matches(change.revision) {
                woke = true
                if s.queue.count - s.queueHead >= limit {
                    s.closed = .slowConsumer(lastEventID: "\(nodeID).\(s.position)")
                    ok = false
                    break
                }
                s.queue.append(Queued(change: change, peer: peer))
                if peer == nil { s.position = change.seq }
            }
            return woke ? takeWaiter(&s) : nil
        }
        waiter?.resume()
        return ok
    }

    /// Ends the stream from the node's side.
    public func close(_ end: EventStreamEnd) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.closed == nil { s.closed = end }
            return takeWaiter(&s)
        }
        waiter?.resume()
    }

    /// Drops the derived key (the stream ended).
    func forgetKey() { state.withLock { $0.key = nil } }

    private func takeWaiter(_ s: inout State) -> CheckedContinuation<Void, Never>? {
        if let w = s.waiter {
            s.waiter = nil
            return w
        }
        s.woken = true
        return nil
    }

    /// The next step of the stream: a missed change from history, a queued change, the key's
    /// expiry, the end, or `idle` after `timeout` without any.
    public func next(timeout: Duration) async -> EventStreamStep {
        if let change = await nextReplayed() { return deliver(change) }
        if let step = takeQueued() { return step }
        await waitForWork(timeout: timeout)
        return takeQueued() ?? .idle
    }

    private func takeQueued() -> EventStreamStep? {
        let taken = state.withLock { s -> (Queued?, EventStreamEnd?, Bool) in
            if !s.keyExpiryReported, s.key != nil, s.keyExpires <= ContinuousClock.now {
                s.key = nil
                s.keyExpiryReported = true
                return (nil, nil, true)
            }
            if s.queueHead < s.queue.count {
                let change = s.queue[s.queueHead]
                s.queueHead += 1
                if s.queueHead > 64 && s.queueHead * 2 > s.queue.count {
                    s.queue.removeFirst(s.queueHead)
                    s.queueHead = 0
                }
                return (change, nil, false)
            }
            return (nil, s.closed, false)
        }
        if taken.2 { return .keyExpired }
        if let queued = taken.0 { return deliver(queued.change, relayed: queued.peer != nil) }
        if let end = taken.1 { return .closed(end) }
        return nil
    }

    private func deliver(_ change: StoredChange, relayed: Bool = false) -> EventStreamStep {
        let key = state.withLock { $0.key }
        hub.sent(change.kind)
        // A value goes only to a subscriber whose policy may read it (events alone: no value).
        let readable = filter.policy?.allows(.read, environment: change.revision.environment, key: change.revision.key) ?? true
        return .change(id: relayed ? nil : hub.eventID(change.seq), change: change, payload: readable ? hub.payload(change, key: key) : .null)
    }

    /// The next missed change from history, reading it a page at a time.
    private func nextReplayed() async -> StoredChange? {
        while true {
            let (buffered, pending) = state.withLock { s -> (StoredChange?, (from: Int64, through: Int64)?) in
                if !s.replayBuffer.isEmpty { return (s.replayBuffer.removeFirst(), nil) }
                return (nil, s.replay)
            }
            if let buffered { return buffered }
            guard let pending else { return nil }
            let page: ChangeFeedPage
            do {
                page = try await hub.storage.changes(after: pending.from, limit: 256)
            } catch {
                // History unreadable: end the stream, telling the client where to resume,
                // rather than go live past what it has not been sent.
                state.withLock { s in
                    s.replay = nil
                    s.replayBuffer = []
                    s.queue = []
                    s.queueHead = 0
                    s.closed = .slowConsumer(lastEventID: hub.eventID(pending.from))
                }
                return nil
            }
            state.withLock { s in
                s.replayBuffer = page.changes.filter { $0.seq <= pending.through && filter.matches($0.revision) }
                s.replay = page.through >= pending.through || page.through <= pending.from ? nil : (page.through, pending.through)
            }
        }
    }

    private func waitForWork(timeout: Duration) async {
        let timer = Task { [self] in
            do { try await Task.sleep(for: timeout) } catch { return }
            let waiter = state.withLock { s in takeWaiter(&s) }
            waiter?.resume()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.woken || Task.isCancelled {
                        s.woken = false
                        return true
                    }
                    s.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { s in takeWaiter(&s) }
            waiter?.resume()
        }
        timer.cancel()
    }
}
