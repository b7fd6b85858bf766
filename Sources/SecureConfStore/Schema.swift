import GRDB

/// The store's schema, as named migrations applied in order.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-revisions-entries-meta") { db in
            try db.execute(sql: """
                CREATE TABLE meta (
                    name TEXT PRIMARY KEY NOT NULL,
                    value TEXT NOT NULL
                ) WITHOUT ROWID;

                CREATE TABLE counters (
                    name TEXT PRIMARY KEY NOT NULL,
                    value INTEGER NOT NULL
                ) WITHOUT ROWID;
                INSERT INTO counters(name, value) VALUES ('live_entries', 0);

                -- Append-only history: every write ever made, by any node.
                CREATE TABLE revisions (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    environment TEXT NOT NULL,
                    key TEXT NOT NULL,
                    category TEXT,
                    ciphertext TEXT NOT NULL,
                    hlc INTEGER NOT NULL,
                    origin TEXT NOT NULL,
                    deleted INTEGER NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    actor TEXT,
                    UNIQUE (environment, key, hlc, origin)
                );

                -- The newest revision per (environment, key); deletes stay as tombstones.
                CREATE TABLE entries (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    environment TEXT NOT NULL,
                    key TEXT NOT NULL,
                    category TEXT,
                    ciphertext TEXT NOT NULL,
                    hlc INTEGER NOT NULL,
                    origin TEXT NOT NULL,
                    deleted INTEGER NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    UNIQUE (environment, key)
                );
                CREATE INDEX entries_by_category ON entries(category, environment) WHERE deleted = 0;
                """)
        }
        migrator.registerMigration("v2-history-retention-audit") { db in
            try db.execute(sql: """
                -- Identities of revisions dropped by OSC_MAX_VERSIONS, so version numbers stay
                -- stable and a replicated copy of a pruned revision is recognised, not re-added.
                CREATE TABLE pruned_revisions (
                    environment TEXT NOT NULL,
                    key TEXT NOT NULL,
                    hlc INTEGER NOT NULL,
                    origin TEXT NOT NULL,
                    deleted INTEGER NOT NULL,
                    PRIMARY KEY (environment, key, hlc, origin)
                ) WITHOUT ROWID;

                -- The audit trail: append-only, hash-chained (hash = SHA-256(previous hash || record)).
                CREATE TABLE audit_log (
                    id INTEGER PRIMARY KEY,
                    time INTEGER NOT NULL,
                    node_id TEXT NOT NULL,
                    actor TEXT NOT NULL,
                    client TEXT NOT NULL,
                    action TEXT NOT NULL,
                    environment TEXT,
                    key TEXT,
                    outcome TEXT NOT NULL,
                    status INTEGER NOT NULL,
                    request_id TEXT NOT NULL,
                    hash TEXT NOT NULL
                );
                CREATE INDEX audit_by_key ON audit_log(key, environment);
                CREATE INDEX audit_by_time ON audit_log(time);

                -- The chain's head: the last id and hash, updated with every append, so a
                -- truncated tail is detected too.
                CREATE TABLE audit_head (
                    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                    last_id INTEGER NOT NULL,
                    hash TEXT NOT NULL
                );
                INSERT INTO audit_head(singleton, last_id, hash) VALUES (1, 0, '\(AuditChain.genesisHex)');
                """)
        }
        return migrator
    }
}
