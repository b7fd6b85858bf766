import Logging
import PostgresNIO

/// The PostgreSQL schema, as numbered migrations. Nodes starting together on one database
/// run them once: the first takes a session advisory lock, applies what is missing, each
/// migration in its own transaction with its row in `secureconf_migrations`; the others wait
/// for the lock and then find nothing to do.
enum PostgresSchema {
    /// The advisory lock key of migrations ("SCMIGRAT" in ASCII).
    static let migrationLock: Int64 = 0x5343_4D49_4752_4154

    static let migrations: [(version: Int, name: String, sql: [String])] = [
        (
            1, "v1-entries-revisions-audit",
            [
                """
                CREATE TABLE meta (
                    name text COLLATE "C" PRIMARY KEY,
                    value text NOT NULL
                )
                """,
                """
                CREATE TABLE counters (
                    name text COLLATE "C" PRIMARY KEY,
                    value bigint NOT NULL
                )
                """,
                // last_seq: the newest revision's sequence number. Every write transaction locks
                // this row first, so writes from every node commit one at a time, in sequence order.
                "INSERT INTO counters(name, value) VALUES ('last_seq', 0), ('live_entries', 0), ('pruned_through_seq', 0)",
                """
                CREATE TABLE revisions (
                    seq bigint PRIMARY KEY,
                    environment text COLLATE "C" NOT NULL,
                    key text COLLATE "C" NOT NULL,
                    category text COLLATE "C",
                    ciphertext text NOT NULL,
                    hlc bigint NOT NULL,
                    origin text COLLATE "C" NOT NULL,
                    deleted boolean NOT NULL,
                    created_at bigint NOT NULL,
                    updated_at bigint NOT NULL,
                    actor text,
                    purges_through_hlc bigint,
                    purges_through_origin text COLLATE "C",
                    UNIQUE (environment, key, hlc, origin)
                )
                """,
                """
                CREATE TABLE entries (
                    id bigserial PRIMARY KEY,
                    environment text COLLATE "C" NOT NULL,
                    key text COLLATE "C" NOT NULL,
                    category text COLLATE "C",
                    ciphertext text NOT NULL,
                    hlc bigint NOT NULL,
                    origin text COLLATE "C" NOT NULL,
                    deleted boolean NOT NULL,
                    created_at bigint NOT NULL,
                    updated_at bigint NOT NULL,
                    UNIQUE (environment, key)
                )
                """,
                "CREATE INDEX entries_by_environment ON entries(environment, id)",
                "CREATE INDEX entries_by_category ON entries(category, environment) WHERE NOT deleted",
                """
                CREATE TABLE pruned_revisions (
                    environment text COLLATE "C" NOT NULL,
                    key text COLLATE "C" NOT NULL,
                    hlc bigint NOT NULL,
                    origin text COLLATE "C" NOT NULL,
                    deleted boolean NOT NULL,
                    seq bigint NOT NULL,
                    PRIMARY KEY (environment, key, hlc, origin)
                )
                """,
                "CREATE INDEX pruned_by_seq ON pruned_revisions(environment, key, seq)",
                """
                CREATE TABLE audit_log (
                    id bigint PRIMARY KEY,
                    time bigint NOT NULL,
                    node_id text NOT NULL,
                    actor text NOT NULL,
                    client text NOT NULL,
                    action text NOT NULL,
                    environment text COLLATE "C",
                    key text COLLATE "C",
                    outcome text NOT NULL,
                    status bigint NOT NULL,
                    request_id text NOT NULL,
                    hash text NOT NULL
                )
                """,
                "CREATE INDEX audit_by_key ON audit_log(key, environment)",
                "CREATE INDEX audit_by_time ON audit_log(time)",
                """
                CREATE TABLE audit_head (
                    singleton integer PRIMARY KEY CHECK (singleton = 1),
                    last_id bigint NOT NULL,
                    hash text NOT NULL
                )
                """,
                "INSERT INTO audit_head(singleton, last_id, hash) VALUES (1, 0, '\(String(repeating: "0", count: 64))')",
            ]
        )
    ]

    /// Applies every migration the database lacks; refuses a database whose schema is newer
    /// than this node knows (a node of an older release must not write to it).
    static func migrate(_ client: PostgresClient, logger: Logger) async throws -> Int {
        try await client.withConnection { connection in
            try await connection.execute("SELECT pg_advisory_lock(\(migrationLock))", logger: logger)
            do {
                let applied = try await apply(connection, logger: logger)
                try await connection.execute("SELECT pg_advisory_unlock(\(migrationLock))", logger: logger)
                return applied
            } catch {
                try? await connection.execute("SELECT pg_advisory_unlock(\(migrationLock))", logger: logger)
                throw error
            }
        }
    }

    private static func apply(_ connection: PostgresConnection, logger: Logger) async throws -> Int {
        try await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS secureconf_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            logger: logger
        )
        var have = Set<Int>()
        for try await version in try await connection.query("SELECT version FROM secureconf_migrations", logger: logger).decode(Int.self) {
            have.insert(version)
        }
        let known = Set(migrations.map(\.version))
        if let newer = have.subtracting(known).max() {
            throw PostgresStoreError.newerSchema(newer)
        }
        var applied = 0
        for migration in migrations where !have.contains(migration.version) {
            try await connection.withTransaction(logger: logger) { tx in
                for statement in migration.sql { try await tx.execute(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await tx.execute(
                    "INSERT INTO secureconf_migrations(version, name) VALUES (\(migration.version), \(migration.name))",
                    logger: logger
                )
            }
            logger.notice("PostgreSQL schema migrated", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            applied += 1
        }
        return applied
    }
}

/// Why a PostgreSQL store does not open.
public enum PostgresStoreError: Error, CustomStringConvertible {
    case newerSchema(Int)
    case unreachable(String)

    public var description: String {
        switch self {
        case let .newerSchema(v):
            "the database's schema (migration \(v)) is newer than this node knows; upgrade this node before starting it on that database"
        case let .unreachable(why): why
        }
    }
}
