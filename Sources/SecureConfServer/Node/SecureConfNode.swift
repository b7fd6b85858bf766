import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import SecureConfCluster
import SecureConfCore
import SecureConfCrypto
import SecureConfPostgres
import SecureConfStore
import ServiceLifecycle
import Synchronization
import UnixSignals

public enum SecureConfVersion {
    public static let string = "0.1.0"
}

/// Why a node will not start; the message names what is wrong and what to do.
public struct StartupError: Error, CustomStringConvertible {
    public let description: String
}

/// One node's long-lived parts: configuration, store, salt, key cache, metrics, logger.
public final class SecureConfNode: Sendable {
    public let configuration: NodeConfiguration
    /// SQLite (`ConfigStore`) by default, PostgreSQL (`PostgresStore`) with OSC_DATABASE_URL.
    public let store: any ConfigStorage
    /// The store as a replica cluster uses it: SQLite's; nil on PostgreSQL.
    public let replicated: (any ReplicatedStorage)?
    /// User key to derived key through the failed-attempt limiter; actor names.
    public let credentials: CredentialGate
    /// Every configuration operation (create … restore): the one path from controllers to storage.
    public let service: ConfigService
    /// Users and tokens (used in `OSC_AUTH_MODE=tokens`).
    public let identity: IdentityService
    public var keys: DerivedKeyCache { credentials.keys }
    public let metrics: ServerMetrics
    public let logger: Logger
    /// The salt: its bytes and fingerprint, the salt peers offer, whether this node may serve.
    public let nodeSalt: NodeSalt
    public var salt: [UInt8] { nodeSalt.bytes }
    public var saltFingerprint: String { nodeSalt.fingerprint }
    /// The cluster's background work; nil on a single node.
    public let cluster: ClusterCoordinator?
    /// Checks signed node-to-node requests; nil without a peer credential.
    let peerVerifier: PeerRequestVerifier?
    /// The host part of every cluster node's id (exempt from the overall connection cap);
    /// follows a membership reload.
    let peerHosts: Mutex<Set<String>>

    static func hosts(of nodes: [String]) -> Set<String> {
        Set(
            nodes.compactMap { node -> String? in
                guard let colon = node.lastIndex(of: ":") else { return nil }
                return String(node[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            }
        )
    }

    /// Opens the store and the salt, refusing to start rather than ever minting a salt
    /// over existing data or serving data encrypted under a different salt.
    /// `opened`: a store opened already (PostgreSQL's opens asynchronously, in `start`);
    /// nil opens SQLite's at `databasePath`.
    public init(
        configuration: NodeConfiguration,
        metrics: ServerMetrics = ServerMetrics(),
        logger: Logger,
        store opened: (any ConfigStorage)? = nil
    ) throws {
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        peerHosts = Mutex(configuration.clusterEnabled ? Self.hosts(of: configuration.clusterNodes) : [])
        let databaseDirectory = URL(fileURLWithPath: configuration.databasePath).deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(
                atPath: opened == nil ? databaseDirectory : URL(fileURLWithPath: configuration.saltFilePath).deletingLastPathComponent().path,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
        } catch {
            throw StartupError(description: "cannot create the data directory \(databaseDirectory): \(error.localizedDescription)")
        }
        let store: any ConfigStorage
        if let opened {
            store = opened
        } else {
            do {
                var storeConfiguration = ConfigStore.Configuration(path: configuration.databasePath, nodeID: configuration.nodeID)
                storeConfiguration.maxVersions = configuration.maxVersions
                storeConfiguration.readCacheEntries = configuration.readCacheEntries
                storeConfiguration.maxClockAheadMillis = Int64(configuration.clusterMaxClockSkewSeconds * 1000)
                let sqlite = try ConfigStore(configuration: storeConfiguration, logger: logger)
                metrics.storeOpened(walFramesNotRecovered: sqlite.walFramesNotRecovered, setAsideAtStart: sqlite.setAsideAtStart)
                store = sqlite
            } catch {
                throw StartupError(description: "cannot open the database \(configuration.databasePath): \(error)")
            }
        }
        self.store = store
        replicated = store as? any ReplicatedStorage
        do {
            nodeSalt = try NodeSalt.open(
                path: configuration.saltFilePath,
                store: store,
                databasePath: configuration.databaseLabel,
                kdfIterations: Int(configuration.kdfIterations),
                logger: logger
            )
        } catch let error as SaltError {
            throw StartupError(description: error.description)
        }
        let salt = nodeSalt.bytes
        let keys = DerivedKeyCache(
            salt: salt,
            configuration: .init(
                capacity: configuration.keyCacheSize,
                ttlSeconds: configuration.keyCacheTTLSeconds,
                maxQueuedDerivations: configuration.kdfMaxQueue,
                iterations: configuration.kdfIterations
            ),
            observer: metrics
        )
        // Actor ids are keyed by a secret no client API exposes (from the peer credential in a
        // cluster, so every node names the same actor; random per store on a single node).
        let actorKey = try Self.actorKey(configuration: configuration, salt: salt, store: store)
        credentials = CredentialGate(
            keys: keys,
            limiter: AuthFailureLimiter(limit: configuration.authFailureLimit, windowSeconds: configuration.authFailureWindowSeconds),
            actorKey: actorKey
        )
        var eventSettings = ChangeEventHub.Settings()
        eventSettings.maxSubscribers = configuration.sseMaxSubscribers
        eventSettings.queueLimit = configuration.sseQueueSize
        eventSettings.keyLifetime = .milliseconds(Int64(configuration.keyCacheTTLSeconds * 1000))
        let events = ChangeEventHub(
            nodeID: configuration.nodeID,
            storage: store,
            cipher: ValueCipher(observer: metrics, maxTokenBytes: configuration.maxCiphertextBytes),
            settings: eventSettings,
            observer: metrics
        )
        if let settings = configuration.clusterSettings {
            guard let replicated else {
                throw StartupError(
                    description:
                        "a replica or federated cluster keeps its data in SQLite on every node; nodes on PostgreSQL share one database instead (unset OSC_CLUSTER_ENABLED)"
                )
            }
            cluster = ClusterCoordinator(
                settings: settings,
                store: replicated,
                transport: Self.transport(settings, timeout: settings.peerTimeout, saltFingerprint: nodeSalt.fingerprint),
                saltFingerprint: nodeSalt.fingerprint,
                logger: logger,
                observer: metrics,
                changeRelay: events
            )
            peerVerifier = settings.credential.map {
                PeerRequestVerifier(
                    credential: $0,
                    nodeID: settings.nodeID,
                    peers: settings.peers,
                    windowMillis: Int64(settings.replayWindow.seconds * 1000)
                )
            }
            metrics.peerAuthentication(insecure: !settings.peersAuthenticated)
            if settings.credential == nil {
                logger.warning(
                    "peers authenticate with the clients' API key (no OSC_CLUSTER_SECRET): any client holding OSC_API_KEY can read the salt and ciphertexts and forge replicated revisions; set OSC_CLUSTER_SECRET on every node (README, production checklist)"
                )
            } else if settings.acceptAPIKeyPeers {
                logger.warning(
                    "OSC_CLUSTER_ACCEPT_API_KEY_PEERS=true: unsigned peers holding the API key are still accepted; turn it off once every node has OSC_CLUSTER_SECRET"
                )
            }
        } else {
            cluster = nil
            peerVerifier = nil
        }
        service = ConfigService(
            storage: store,
            credentials: credentials,
            cluster: cluster,
            observer: metrics,
            maxTokenBytes: configuration.maxCiphertextBytes,
            events: events
        )
        // Users and tokens, sealed under a secret every node of the cluster shares and no
        // client API exposes (the actor key's). A cluster node trusts its tokens only once it
        // has caught up with a peer since it started (it may have missed a revocation).
        let clustered = cluster.flatMap { $0.settings.peers.isEmpty ? nil : $0 }
        identity = IdentityService(
            storage: store,
            keys: keys,
            limiter: credentials.limiter,
            sealSecret: actorKey,
            settings: .init(tokenLifetimeSeconds: configuration.tokenTTLSeconds),
            ready: { clustered?.hasSynced ?? true },
            committed: { [cluster] in cluster?.localWriteCommitted() }
        )
    }

    /// Starts a node; in a cluster, a node without a salt and without data first gets the
    /// cluster's salt from its peers (or creates it, if it sorts first and nobody has one).
    public static func start(
        configuration: NodeConfiguration,
        metrics: ServerMetrics = ServerMetrics(),
        logger: Logger
    ) async throws -> SecureConfNode {
        if let settings = configuration.clusterSettings {
            do {
                try await NodeSalt.bootstrap(
                    path: configuration.saltFilePath,
                    hasData: {
                        guard FileManager.default.fileExists(atPath: configuration.databasePath) else { return false }
                        var storeConfiguration = ConfigStore.Configuration(path: configuration.databasePath, nodeID: configuration.nodeID)
                        storeConfiguration.maxClockAheadMillis = Int64(configuration.clusterMaxClockSkewSeconds * 1000)
                        let store = try ConfigStore(configuration: storeConfiguration, logger: logger)
                        let hasData = try store.hasData() || (try store.metadata("salt_fingerprint")) != nil
                        await store.close()
                        return hasData
                    },
                    settings: settings,
                    transport: Self.transport(settings, timeout: .seconds(2), saltFingerprint: nil),
                    logger: logger
                )
            } catch let error as SaltError {
                throw StartupError(description: error.description)
            }
        }
        guard let database = configuration.database else {
            return try SecureConfNode(configuration: configuration, metrics: metrics, logger: logger)
        }
        var storeConfiguration = PostgresStore.Configuration(settings: database, nodeID: configuration.nodeID)
        storeConfiguration.maxVersions = configuration.maxVersions
        storeConfiguration.maxClockAheadMillis = Int64(configuration.clusterMaxClockSkewSeconds * 1000)
        storeConfiguration.observer = metrics
        let store: PostgresStore
        do {
            store = try await PostgresStore.open(storeConfiguration, logger: logger)
        } catch {
            throw StartupError(description: "cannot open the database \(database): \(error)")
        }
        logger.notice("storage: PostgreSQL", metadata: ["database": "\(database)", "host": "\(store.activeHost)"])
        do {
            return try SecureConfNode(configuration: configuration, metrics: metrics, logger: logger, store: store)
        } catch {
            await store.close()
            throw error
        }
    }

    /// The node-to-node transport: signed with the peer credential when there is one.
    static func transport(_ settings: ClusterSettings, timeout: Duration, saltFingerprint: String?) -> PeerTransport {
        PeerTransport(
            apiKey: settings.apiKey,
            timeout: timeout,
            scheme: settings.scheme,
            caFile: settings.caFile,
            saltFingerprint: saltFingerprint,
            nodeID: settings.nodeID,
            credential: settings.credential,
            requireSignedReplies: !settings.acceptAPIKeyPeers
        )
    }

    /// The key of actor ids. Not derivable from the salt (which peers fetch), so an actor id
    /// in a listing lets nobody test a guessed user key: from the peer credential in a
    /// cluster that has one; from the salt and the API key in a cluster that has only those
    /// (whoever holds both can fetch ciphertexts anyway: README); random, kept in the
    /// store, on a single node.
    static func actorKey(configuration: NodeConfiguration, salt: [UInt8], store: any MetadataStorage) throws -> [UInt8] {
        if let settings = configuration.clusterSettings {
            if let credential = settings.credential { return credential.actorKey }
            return OpenSSL.hmacSHA256(key: salt, data: Array("secureconf actor key v2|\(settings.apiKey)".utf8))
        }
        if let stored = try store.metadata("actor_key"), let bytes = Hex.decode(stored), bytes.count == 32 { return bytes }
        // Claimed: nodes sharing one database name the same actor alike.
        let claimed = try store.claimMetadata("actor_key", Hex.encode(OpenSSL.randomBytes(32)))
        guard let bytes = Hex.decode(claimed), bytes.count == 32 else { throw StartupError(description: "the stored actor key is damaged") }
        return bytes
    }

    func actor(for key: CachedKey) -> String { credentials.actor(for: key) }
    func actor(apiKey: String) -> String { credentials.actor(apiKey: apiKey) }

    /// 503 with the reason while this node's salt differs from the cluster's.
    func ensureServing() throws { try NodeSalt.ensureServing(cluster) }

    /// 503 while this node's clock runs ahead of its peers beyond the skew allowed: a client
    /// write stamped now would beat later writes on honest nodes.
    func ensureClockAllowsWrites() throws {
        do {
            try cluster?.ensureClockAllowsWrites()
        } catch let e as ClockAhead {
            throw ServiceError(.clockAhead, e.description, retryAfter: 5)
        }
    }

    /// Replaces the cluster's nodes without a restart (SIGHUP): the coordinator's peers and the
    /// senders whose signed requests are accepted. nil on a single node.
    public func reloadMembership(_ nodes: [String]) async -> (added: [String], removed: [String])? {
        guard let cluster else { return nil }
        let changes = await cluster.setPeers(nodes)
        // What the coordinator accepted (it refuses a list naming no peer), for the verifier
        // and the connection budget alike.
        let accepted = cluster.currentPeers
        peerVerifier?.setPeers(accepted)
        peerHosts.withLock { $0 = Self.hosts(of: accepted + [configuration.nodeID]) }
        return changes
    }

    /// Finishes pending writes and closes the store.
    public func close() async {
        await store.close()
        await keys.shutdown()
    }
}

/// Closes the store after the HTTP server has drained (services stop in reverse order).
struct StoreLifecycleService: Service {
    let node: SecureConfNode

    func run() async throws {
        try? await gracefulShutdown()
        await node.close()
        node.logger.info("store closed")
    }
}

/// Runs first when shutdown begins (listed after the application, and a service group stops
/// its services in reverse order): the cluster ends its quorum waits and its requests to
/// peers before the HTTP server drains, so that SIGTERM is answered in a second or two even
/// while a peer hangs.
struct ShutdownNotice: Service {
    let node: SecureConfNode

    func run() async throws {
        try? await gracefulShutdown()
        node.cluster?.beginShutdown()
    }
}

/// Reloads the cluster's membership on SIGHUP: `nodes()` reads the configuration again
/// (OSC_CLUSTER_NODES_FILE, or OSC_CLUSTER_NODES from the `.env` file); a list that does not
/// parse changes nothing. Nothing else is reloaded.
struct MembershipReloadService: Service {
    let node: SecureConfNode
    let nodes: @Sendable () throws -> [String]

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                do {
                    let list = try nodes()
                    guard let (added, removed) = await node.reloadMembership(list) else {
                        node.logger.warning("SIGHUP: not a cluster node; nothing to reload")
                        continue
                    }
                    if added.isEmpty && removed.isEmpty {
                        node.logger.notice("SIGHUP: cluster membership unchanged", metadata: ["nodes": "\(list.joined(separator: ","))"])
                    }
                } catch {
                    node.logger.error("SIGHUP: the configuration does not load; membership unchanged", metadata: ["reason": "\(error)"])
                }
            }
        }
    }
}

/// Runs a node's application until SIGTERM or SIGINT, then shuts it down in order: the
/// cluster's waits, the HTTP server's drain, the cluster's loops, the event streams, the store.
/// `reloadNodes`, when given, re-reads the cluster's node list on SIGHUP.
public func runUntilSignalled(
    _ app: some ApplicationProtocol,
    node: SecureConfNode,
    reloadNodes: (@Sendable () throws -> [String])? = nil
) async throws {
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: app)]
    if let reloadNodes, node.cluster != nil { services.append(.init(service: MembershipReloadService(node: node, nodes: reloadNodes))) }
    services.append(.init(service: ShutdownNotice(node: node)))
    let group = ServiceGroup(
        configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: node.logger
        )
    )
    try await group.run()
}

/// Reads the change feed for the event streams until shutdown (the streams themselves close
/// with the HTTP server's graceful shutdown).
struct ChangeEventService: Service {
    let hub: ChangeEventHub

    func run() async throws {
        await cancelWhenGracefulShutdown { await hub.run() }
        hub.shutdown()
    }
}

/// The whole application: HTTP server, router, and the store's lifecycle.
public func buildApplication(
    node: SecureConfNode,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) throws -> some ApplicationProtocol {
    let c = node.configuration
    let group = MultiThreadedEventLoopGroup(numberOfThreads: c.workers)
    let limits = ConnectionLimits(
        maxTotal: c.maxConnections ?? ConnectionLimits.defaultMaxTotal(),
        maxPerClient: c.maxConnectionsPerClient,
        isPeer: { client in node.peerHosts.withLock { $0.contains(client) } }
    )
    let metrics = node.metrics
    let requestTimeout = TimeAmount.milliseconds(Int64(c.requestTimeoutSeconds * 1000))
    node.logger.info(
        "connection limits",
        metadata: [
            "max_connections": "\(limits.maxTotal)", "max_per_client": "\(limits.maxPerClient)",
            "request_timeout_s": "\(c.requestTimeoutSeconds)",
        ]
    )
    var http1 = HTTP1Channel.Configuration(
        additionalChannelHandlers: [
            ConnectionGuard(
                limits: limits,
                requestTimeout: requestTimeout,
                onRefused: { metrics.connectionRefused(reason: $0) },
                onTimeout: { metrics.requestTimedOut() }
            )
        ],
        idleTimeout: .milliseconds(Int64(c.idleTimeoutSeconds * 1000))
    )
    // The request line counts as a header field here: `/import`'s query form carries whole backups.
    http1.httpDecoder = .init(maxHeaderFieldSize: c.maxHeaderBytes, maxHeaderListSize: c.maxHeaderBytes, maxHeaderFieldCount: 1000)
    var server: HTTPServerBuilder = .http1(configuration: http1)
    if let certificateFile = c.tlsCertificateFile, let keyFile = c.tlsKeyFile {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { NIOSSLCertificateSource.certificate($0) }
            let key: NIOSSLPrivateKey
            if let password = c.tlsKeyPassword {
                let bytes = Array(password.utf8)
                key = try NIOSSLPrivateKey(file: keyFile, format: .pem) { setPassphrase in setPassphrase(bytes) }
            } else {
                key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
            }
            var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            tls.minimumTLSVersion = .tlsv12
            server = try .tls(server, tlsConfiguration: tls)
        } catch {
            throw StartupError(description: "cannot load the TLS certificate \(certificateFile) or key \(keyFile): \(error)")
        }
    }
    var app = Application(
        router: buildRouter(node: node),
        server: server,
        configuration: .init(address: .hostname(c.host, port: c.port), serverName: nil, backlog: 1024),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
        eventLoopGroupProvider: .shared(group),
        logger: node.logger
    )
    app.addServices(StoreLifecycleService(node: node))
    if let events = node.service.events { app.addServices(ChangeEventService(hub: events)) }
    if let cluster = node.cluster { app.addServices(cluster) }
    if let horizon = c.tombstoneHorizonSeconds, let replicated = node.replicated {
        app.addServices(
            TombstoneCollector(
                store: replicated,
                horizon: .milliseconds(Int64(horizon * 1000)),
                coordinator: node.cluster,
                logger: node.logger,
                collected: { [metrics] in metrics.keysCollected.increment(by: Int64($0.keys)) }
            )
        )
    }
    return app
}
