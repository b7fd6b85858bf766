import Prometheus
import SecureConfCluster
import SecureConfCore
import SecureConfCrypto
import SecureConfPostgres
import SecureConfStore
import Synchronization

/// The node's Prometheus metrics, with OpenSecureConf's names. Labels carry route
/// templates, methods, status codes and operation names only: never keys or values.
public final class ServerMetrics: Sendable, DerivedKeyCacheObserver, OperationObserver {
    public let registry = PrometheusCollectorRegistry()

    private struct RequestKey: Hashable { let method: String, endpoint: String, status: Int }
    private struct PairKey: Hashable { let a: String, b: String }

    private let requestCounters = Mutex<[RequestKey: Counter]>([:])
    private let durations = Mutex<[PairKey: DurationHistogram]>([:])
    private let operationCounters = Mutex<[PairKey: Counter]>([:])
    private let errorCounters = Mutex<[PairKey: Counter]>([:])
    private let encryptionCounters = Mutex<[String: Counter]>([:])

    public let configEntries: Gauge
    public let clusterNodesTotal: Gauge
    public let clusterNodesHealthy: Gauge
    public let clusterSyncDuration: DurationHistogram
    let keyDerivations: Counter
    let keyCacheHits: Counter
    let keyCacheMisses: Counter
    let keyDerivationsRefused: Counter
    let keyDerivationDuration: DurationHistogram
    public let logLinesDropped: Counter
    /// Audit records made durable by this process.
    public let auditRecords: Counter
    /// `/audit/verify` runs that found the chain broken.
    public let auditVerificationFailures: Counter
    /// Deleted keys whose history this node collected (`OSC_TOMBSTONE_HORIZON`).
    public let keysCollected: Counter

    static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    public init() {
        configEntries = registry.makeGauge(name: "osc_config_entries_total", help: "Live configuration entries stored on this node")
        clusterNodesTotal = registry.makeGauge(name: "osc_cluster_nodes_total", help: "Nodes in the cluster, this one included")
        clusterNodesHealthy = registry.makeGauge(name: "osc_cluster_nodes_healthy", help: "Healthy nodes in the cluster, this one included")
        clusterSyncDuration = registry.makeDurationHistogram(
            name: "osc_cluster_sync_duration_seconds",
            buckets: Self.latencyBuckets,
            help: "Duration of cluster synchronisation rounds"
        )
        keyDerivations = registry.makeCounter(name: "osc_key_derivations_total", help: "PBKDF2 key derivations run")
        keyCacheHits = registry.makeCounter(name: "osc_key_cache_hits_total", help: "Requests answered from the derived-key cache")
        keyCacheMisses = registry.makeCounter(name: "osc_key_cache_misses_total", help: "Requests that needed a key derivation")
        keyDerivationsRefused = registry.makeCounter(
            name: "osc_key_derivations_refused_total",
            help: "Requests refused with 503 because the derivation pool and queue were full"
        )
        keyDerivationDuration = registry.makeDurationHistogram(
            name: "osc_key_derivation_duration_seconds",
            buckets: [
                .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(75), .milliseconds(100),
                .milliseconds(150), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
            ],
            help: "Time to derive a key with PBKDF2, queueing included"
        )
        logLinesDropped = registry.makeCounter(name: "osc_log_lines_dropped_total", help: "Log lines dropped because the log writer fell behind")
        auditRecords = registry.makeCounter(name: "osc_audit_records_total", help: "Audit records appended (durable) by this node since it started")
        keysCollected = registry.makeCounter(
            name: "osc_tombstones_collected_total",
            help: "Deleted keys whose history this node collected past OSC_TOMBSTONE_HORIZON"
        )
        auditVerificationFailures = registry.makeCounter(
            name: "osc_audit_verification_failures_total",
            help: "Audit chain verifications that found an altered, missing or out-of-place record"
        )
        clusterNodesTotal.set(to: 1.0)
        clusterNodesHealthy.set(to: 1.0)
    }

    public func recordRequest(method: String, endpoint: String, status: Int, duration: Duration) {
        let key = RequestKey(method: method, endpoint: endpoint, status: status)
        let counter = requestCounters.withLock { cache in
            if let c = cache[key] { return c }
            let c = registry.makeCounter(
                name: "osc_http_requests_total",
                labels: [("method", method), ("endpoint", endpoint), ("status_code", String(status))],
                help: "HTTP requests by method, route template and status"
            )
            cache[key] = c
            return c
        }
        counter.increment()
        let pair = PairKey(a: method, b: endpoint)
        let histogram = durations.withLock { cache in
            if let h = cache[pair] { return h }
            let h = registry.makeDurationHistogram(
                descriptor: MetricNameDescriptor(
                    metricName: "osc_http_request_duration_seconds",
                    unitName: "",
                    helpText: "HTTP request duration by method and route template"
                ),
                labels: [("method", method), ("endpoint", endpoint)],
                buckets: Self.latencyBuckets
            )
            cache[pair] = h
            return h
        }
        histogram.record(duration)
    }

    /// `osc_config_operations_total{operation,status=success|error}`, and OpenSecureConf's
    /// `osc_config_read_operations_total{status}` (reads of one key) and
    /// `osc_config_write_operations_total{operation,status}` (writes), with
    /// `status` success, not_found or error.
    public func recordOperation(_ operation: ConfigOperation, outcome: OperationOutcome) {
        let key = PairKey(a: operation.rawValue, b: outcome == .success ? "success" : "error")
        counter(
            in: operationCounters,
            key: key,
            name: "osc_config_operations_total",
            labels: [("operation", key.a), ("status", key.b)],
            help: "Configuration operations by kind and outcome"
        ).increment()
        if operation == .read || operation == .readAt {
            let read = PairKey(a: "osc_config_read_operations_total", b: outcome.rawValue)
            counter(
                in: operationCounters,
                key: read,
                name: "osc_config_read_operations_total",
                labels: [("status", read.b)],
                help: "Reads of one configuration by outcome (OpenSecureConf's family)"
            ).increment()
        } else if operation.writes {
            let write = PairKey(a: "osc_config_write_operations_total:" + operation.rawValue, b: outcome.rawValue)
            counter(
                in: operationCounters,
                key: write,
                name: "osc_config_write_operations_total",
                labels: [("operation", operation.rawValue), ("status", write.b)],
                help: "Configuration writes by operation and outcome (OpenSecureConf's family)"
            ).increment()
        }
    }

    public func recordAPIError(endpoint: String, errorType: String) {
        let key = PairKey(a: endpoint, b: errorType)
        counter(
            in: errorCounters,
            key: key,
            name: "osc_api_errors_total",
            labels: [("endpoint", endpoint), ("error_type", errorType)],
            help: "API errors by route template and kind"
        ).increment()
    }

    public func recordEncryption(_ operation: String, count: Int = 1) {
        let c = encryptionCounters.withLock { cache in
            if let c = cache[operation] { return c }
            let c = registry.makeCounter(
                name: "osc_encryption_operations_total",
                labels: [("operation", operation)],
                help: "Fernet encryptions and decryptions"
            )
            cache[operation] = c
            return c
        }
        c.increment(by: Int64(count))
    }

    private func counter(
        in cache: borrowing Mutex<[PairKey: Counter]>,
        key: PairKey,
        name: String,
        labels: [(String, String)],
        help: String
    ) -> Counter {
        cache.withLock { cache in
            if let c = cache[key] { return c }
            let c = registry.makeCounter(name: name, labels: labels, help: help)
            cache[key] = c
            return c
        }
    }

    /// The Prometheus text exposition.
    public func render() -> [UInt8] {
        registry.emitToBuffer()
    }

    // MARK: DerivedKeyCacheObserver

    public func cacheHit() { keyCacheHits.increment() }
    public func cacheMiss() { keyCacheMisses.increment() }
    public func derivationFinished(seconds: Double) {
        keyDerivations.increment()
        keyDerivationDuration.record(.nanoseconds(Int64(seconds * 1e9)))
    }
    public func derivationRefused() { keyDerivationsRefused.increment() }
}

extension ServerMetrics: PostgresObserver {
    public func databaseOperations(inUse: Int, waiting: Int) {
        registry.makeGauge(name: "osc_db_pool_in_use", help: "PostgreSQL operations running now, each on a pooled connection").set(to: Double(inUse))
        registry.makeGauge(name: "osc_db_pool_waiting", help: "PostgreSQL operations waiting for a pooled connection").set(to: Double(waiting))
    }

    public func databaseOperationFinished(seconds: Double, failure: String?) {
        registry.makeDurationHistogram(
            name: "osc_db_operation_duration_seconds",
            buckets: Self.latencyBuckets,
            help: "PostgreSQL operations (a query, or a transaction), connection wait included"
        )
        .record(.nanoseconds(Int64(seconds * 1e9)))
        if let failure {
            registry.makeCounter(
                name: "osc_db_errors_total",
                labels: [("kind", failure)],
                help: "PostgreSQL operations that failed: unavailable, timeout or database"
            )
            .increment()
        }
    }
}

extension ServerMetrics: ClusterObserver {
    private func peerCounter(_ name: String, _ peer: String, help: String) -> Counter {
        registry.makeCounter(name: name, labels: [("peer", peer)], help: help)
    }

    public func membershipChanged(total: Int, healthy: Int) {
        clusterNodesTotal.set(to: Double(total))
        clusterNodesHealthy.set(to: Double(healthy))
    }

    public func revisionsSent(peer: String, count: Int) {
        peerCounter("osc_cluster_revisions_sent_total", peer, help: "Revisions shipped to each peer").increment(by: Int64(count))
    }

    public func revisionsReceived(peer: String, count: Int) {
        peerCounter("osc_cluster_revisions_received_total", peer, help: "New revisions received from each peer").increment(by: Int64(count))
    }

    public func outboxDepth(peer: String, depth: Int) {
        registry.makeGauge(
            name: "osc_cluster_outbox_depth",
            labels: [("peer", peer)],
            help: "This node's revisions not yet acknowledged by each peer"
        )
        .set(to: Double(depth))
    }

    public func conflictsResolved(_ count: Int) {
        registry.makeCounter(name: "osc_cluster_conflicts_resolved_total", help: "Replicated revisions that lost last-writer-wins to a newer one")
            .increment(by: Int64(count))
    }

    public func antiEntropyRepaired(peer: String, count: Int) {
        peerCounter("osc_cluster_antientropy_repairs_total", peer, help: "Revisions pulled by anti-entropy from each peer").increment(
            by: Int64(count)
        )
    }

    public func syncFinished(seconds: Double) {
        clusterSyncDuration.record(.nanoseconds(Int64(seconds * 1e9)))
    }
}

extension ServerMetrics: ClusterSafetyObserver {
    public func revisionsRefused(peer: String, reason: String, count: Int) {
        registry.makeCounter(
            name: "osc_cluster_revisions_refused_total",
            labels: [("peer", peer), ("reason", reason)],
            help: "Revisions from peers refused by validation (invalid, ahead of the clock, anti_entropy)"
        )
        .increment(by: Int64(count))
    }

    public func revisionsSetAside(count: Int) {
        registry.makeCounter(
            name: "osc_cluster_revisions_set_aside_total",
            help: "This node's revisions set aside because a peer refused them as stamped too far ahead"
        )
        .increment(by: Int64(count))
    }

    public func identityConflicts(_ count: Int) {
        registry.makeCounter(
            name: "osc_cluster_identity_conflicts_total",
            help: "Revisions received with a known identity but other content (resolved by content hash)"
        )
        .increment(by: Int64(count))
    }

    public func clockOffset(seconds: Double, ahead: Bool) {
        registry.makeGauge(name: "osc_cluster_clock_offset_seconds", help: "This node's clock minus the median of its healthy peers' clocks")
            .set(to: seconds)
        registry.makeGauge(
            name: "osc_cluster_clock_ahead",
            help: "1 while this node's clock runs ahead of its peers beyond OSC_CLUSTER_MAX_CLOCK_SKEW (writes refused)"
        )
        .set(to: ahead ? 1 : 0)
    }

    public func replicationFailed(peer: String) {
        registry.makeCounter(
            name: "osc_cluster_replication_failures_total",
            labels: [("peer", peer)],
            help: "Replication batches a peer did not accept"
        )
        .increment()
    }

    /// 1 when peers authenticate with the clients' API key (no OSC_CLUSTER_SECRET).
    public func peerAuthentication(insecure: Bool) {
        registry.makeGauge(
            name: "osc_cluster_peer_auth_insecure",
            help: "1 when node-to-node routes accept the clients' API key instead of a peer credential (OSC_CLUSTER_SECRET)"
        )
        .set(to: insecure ? 1 : 0)
    }

    public func peerRequestRefused(reason: String) {
        registry.makeCounter(
            name: "osc_cluster_peer_auth_refused_total",
            labels: [("reason", reason)],
            help: "Node-to-node requests refused by peer authentication"
        )
        .increment()
    }
}

extension ServerMetrics {
    /// A connection closed at once because the connection budget was spent (`total`, `per_client`).
    func connectionRefused(reason: String) {
        registry.makeCounter(
            name: "osc_http_connections_refused_total",
            labels: [("reason", reason)],
            help: "Connections closed at once: OSC_MAX_CONNECTIONS or OSC_MAX_CONNECTIONS_PER_CLIENT reached"
        )
        .increment()
    }

    /// A connection closed because its request did not arrive whole within OSC_REQUEST_TIMEOUT.
    func requestTimedOut() {
        registry.makeCounter(
            name: "osc_http_request_timeouts_total",
            help: "Connections closed because a request was not received whole within OSC_REQUEST_TIMEOUT"
        )
        .increment()
    }
}

extension ServerMetrics {
    /// What the store found when it opened.
    func storeOpened(walFramesNotRecovered: Int, setAsideAtStart: Int) {
        registry.makeGauge(
            name: "osc_store_wal_frames_not_recovered",
            help: "Write-ahead-log frames an unclean stop left that SQLite did not recover at this start"
        )
        .set(to: Double(walFramesNotRecovered))
        registry.makeGauge(
            name: "osc_store_revisions_set_aside_at_start",
            help: "Stored revisions stamped beyond the clock bound, set aside at this start"
        )
        .set(to: Double(setAsideAtStart))
    }
}

extension ServerMetrics: EventObserver {
    public func subscriptionsChanged(active: Int) {
        registry.makeGauge(name: "osc_sse_active_subscriptions", help: "Open change-event streams on this node").set(to: Double(active))
    }

    public func eventSent(_ kind: ChangeKind) {
        registry.makeCounter(
            name: "osc_sse_events_sent_total",
            labels: [("event_type", kind.rawValue)],
            help: "Change events sent to subscribers, by type"
        )
        .increment()
    }

    /// A subscriber dropped (`slow_consumer`) or refused (`limit`).
    public func subscriberRefused(reason: String) {
        registry.makeCounter(
            name: "osc_sse_subscribers_refused_total",
            labels: [("reason", reason)],
            help: "Change-event subscribers dropped for falling behind (slow_consumer) or refused at OSC_SSE_MAX_SUBSCRIBERS (limit)"
        )
        .increment()
    }
}
