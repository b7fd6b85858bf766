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
        return migrator
    }
}
