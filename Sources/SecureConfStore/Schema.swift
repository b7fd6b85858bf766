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
        migrator.registerMigration("v2-replication-digest-cursors") { db in
            try db.execute(sql: """
                ALTER TABLE revisions ADD COLUMN bucket INTEGER NOT NULL DEFAULT 0;
                CREATE INDEX revisions_by_bucket ON revisions(bucket);
                CREATE INDEX revisions_by_origin ON revisions(origin, seq);

                -- XOR of the hashes of every revision whose (environment, key) falls in the bucket:
                -- order-independent, updated in the same transaction as each insert.
                CREATE TABLE digest_buckets (
                    bucket INTEGER PRIMARY KEY NOT NULL,
                    hash BLOB NOT NULL,
                    count INTEGER NOT NULL
                );

                -- How far each peer has acknowledged this node's own revisions (the durable outbox).
                CREATE TABLE peer_cursors (
                    peer TEXT PRIMARY KEY NOT NULL,
                    acked_seq INTEGER NOT NULL
                ) WITHOUT ROWID;
                """)
            let rows = try Row.fetchCursor(db, sql: """
                SELECT seq, environment, key, category, ciphertext, hlc, origin, deleted, created_at, updated_at, actor FROM revisions
                """)
            while let row = try rows.next() {
                let r = Revision(environment: row["environment"], key: row["key"], category: row["category"], ciphertext: row["ciphertext"],
                                 hlc: row["hlc"], origin: row["origin"], deleted: row["deleted"], createdAt: row["created_at"],
                                 updatedAt: row["updated_at"], actor: row["actor"])
                let bucket = RevisionDigest.bucket(environment: r.environment, key: r.key)
                try db.execute(sql: "UPDATE revisions SET bucket = ? WHERE seq = ?", arguments: [bucket, row["seq"] as Int64])
                try RevisionDigest.add(r, bucket: bucket, db: db)
            }
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
