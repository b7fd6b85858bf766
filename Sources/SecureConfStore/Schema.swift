import GRDB

/// The store's schema, as named migrations applied in order.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-revisions-entries-meta") { db in
            try db.execute(
                sql: """
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
                    """
            )
        }
        migrator.registerMigration("v2-replication-digest-cursors") { db in
            try db.execute(
                sql: """
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
                    """
            )
            // Buckets and hashes of existing rows are computed by v3's rebuild.
        }
        migrator.registerMigration("v2-history-retention-audit") { db in
            try db.execute(
                sql: """
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
                    """
            )
        }
        migrator.registerMigration("v3-content-hash-set-aside-typed-audit") { db in
            try db.execute(
                sql: """
                    -- The content hash of each revision (RevisionDigest.contentHash): part of its
                    -- identity in anti-entropy, and its term in the bucket digests.
                    ALTER TABLE revisions ADD COLUMN content_hash BLOB;

                    -- Revisions taken out of the live history: stamped further ahead of the clock
                    -- than OSC_CLUSTER_MAX_CLOCK_SKEW allows, or refused by the peers as such. Kept
                    -- for inspection; never current, never replicated, never in a digest.
                    CREATE TABLE set_aside_revisions (
                        id INTEGER PRIMARY KEY,
                        environment TEXT NOT NULL,
                        key TEXT NOT NULL,
                        category TEXT,
                        ciphertext TEXT NOT NULL,
                        hlc INTEGER NOT NULL,
                        origin TEXT NOT NULL,
                        deleted INTEGER NOT NULL,
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL,
                        actor TEXT,
                        reason TEXT NOT NULL,
                        set_aside_at INTEGER NOT NULL,
                        UNIQUE (environment, key, hlc, origin)
                    );
                    -- Identities refused for good: anti-entropy never takes them back.
                    CREATE TABLE refused_revisions (
                        environment TEXT NOT NULL,
                        key TEXT NOT NULL,
                        hlc INTEGER NOT NULL,
                        origin TEXT NOT NULL,
                        PRIMARY KEY (environment, key, hlc, origin)
                    ) WITHOUT ROWID;

                    -- Audit columns typed: a value of another type is refused at insert time.
                    CREATE TRIGGER audit_log_typed BEFORE INSERT ON audit_log
                    WHEN typeof(NEW.time) != 'integer' OR typeof(NEW.node_id) != 'text' OR typeof(NEW.actor) != 'text'
                      OR typeof(NEW.client) != 'text' OR typeof(NEW.action) != 'text'
                      OR typeof(NEW.environment) NOT IN ('text', 'null') OR typeof(NEW.key) NOT IN ('text', 'null')
                      OR typeof(NEW.outcome) != 'text' OR typeof(NEW.status) != 'integer' OR typeof(NEW.request_id) != 'text'
                      OR typeof(NEW.hash) != 'text'
                    BEGIN SELECT RAISE(ABORT, 'audit record with a mistyped column'); END;
                    """
            )
            try RevisionDigest.rebuild(db: db)
        }
        migrator.registerMigration("v4-change-feed-horizon") { db in
            // The change feed resumes from the revision history; this is the highest sequence
            // number pruned out of it. Revisions pruned before this migration carry no sequence
            // number, so a store that pruned any starts with its whole history behind the horizon.
            try db.execute(
                sql: """
                    INSERT INTO counters(name, value) VALUES ('pruned_through_seq',
                        CASE WHEN EXISTS(SELECT 1 FROM pruned_revisions)
                             THEN COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'revisions'), 0) ELSE 0 END);
                    """
            )
        }
        migrator.registerMigration("v5-purging-revisions") { db in
            // A rekey that purges marks its revisions with the revision each replaced: the key's
            // revisions up to that one leave history everywhere.
            try db.execute(
                sql: """
                    ALTER TABLE revisions ADD COLUMN purges_through_hlc INTEGER;
                    ALTER TABLE revisions ADD COLUMN purges_through_origin TEXT;
                    ALTER TABLE set_aside_revisions ADD COLUMN purges_through_hlc INTEGER;
                    ALTER TABLE set_aside_revisions ADD COLUMN purges_through_origin TEXT;
                    CREATE INDEX revisions_purging ON revisions(environment, key, purges_through_hlc, purges_through_origin)
                        WHERE purges_through_hlc IS NOT NULL;
                    -- This node's own revisions pruned before every peer had them are shipped as
                    -- markers (by their original sequence number), so every node numbers versions alike.
                    ALTER TABLE pruned_revisions ADD COLUMN seq INTEGER;
                    CREATE INDEX pruned_revisions_own ON pruned_revisions(origin, seq) WHERE seq IS NOT NULL;
                    """
            )
        }
        migrator.registerMigration("v6-entries-by-environment") { db in
            // A page of an environment's list (environment = ?, id > ?, ORDER BY id LIMIT n) reads
            // n rows of this index; through UNIQUE(environment, key) it sorted the whole
            // environment for every page (80 ms a page at 100,000 entries: the growth benchmark).
            try db.execute(sql: "CREATE INDEX entries_by_environment ON entries(environment, id)")
        }
        migrator.registerMigration("v7-collected-keys") { db in
            // Deleted keys collected by OSC_TOMBSTONE_HORIZON: one marker per key (its tombstone's
            // identity), so no copy of a collected revision is ever taken back; and their digest,
            // XOR of the markers' hashes, which anti-entropy compares.
            try db.execute(
                sql: """
                    CREATE TABLE collected_keys (
                        environment TEXT NOT NULL,
                        key TEXT NOT NULL,
                        hlc INTEGER NOT NULL,
                        origin TEXT NOT NULL,
                        deleted_at INTEGER NOT NULL,
                        collected_at INTEGER NOT NULL,
                        PRIMARY KEY (environment, key)
                    ) WITHOUT ROWID;
                    CREATE INDEX collected_keys_by_time ON collected_keys(collected_at);
                    CREATE TABLE collected_digest (
                        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                        hash BLOB NOT NULL,
                        count INTEGER NOT NULL
                    );
                    INSERT INTO collected_digest(singleton, hash, count) VALUES (1, zeroblob(32), 0);
                    """
            )
        }
        return migrator
    }
}
