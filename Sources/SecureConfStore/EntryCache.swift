import GRDB
import Synchronization

/// The current entries that reads found recently, by stored (environment, key): what a warm
/// read needs without a trip to a SQLite reader. It holds what the `entries` table holds
/// (ciphertext, never a plaintext) and is kept exact by the writer connection itself: a
/// transaction observer sees every change to `entries`, whatever code made it (local writes,
/// replication, imports, restores, purges), and drops the changed rows before the commit and
/// again after it. A reader fills the cache only if no commit that changed entries began or
/// ended while it read (a generation check), and not while one is under way: a row read from
/// a snapshot older than a commit is never cached once that commit may be visible, so a reader
/// never sees a key's value go back (the race test in EntryCacheTests found that window).
///
/// Bounded by entries and by ciphertext bytes; a full cache evicts an arbitrary entry.
final class EntryCache: TransactionObserver, Sendable {
    struct Name: Hashable, Sendable {
        let environment: String
        let key: String
    }

    private struct State {
        var entries: [Name: ConfigEntry] = [:]
        var names: [Int64: Name] = [:]
        var bytes = 0
        /// Advanced by every commit (or rollback) that changed `entries`.
        var generation: UInt64 = 0
        /// Between a commit that changes entries and its end: readers may see either side of
        /// it, so nothing they read is cached.
        var committing = false
    }

    private let state = Mutex(State())
    /// Row ids of `entries` changed by the transaction in progress (writer connection only).
    private let changed = Mutex<Set<Int64>>([])
    let capacity: Int
    let maxBytes: Int

    init(capacity: Int, maxBytes: Int) {
        self.capacity = max(0, capacity)
        self.maxBytes = max(0, maxBytes)
    }

    /// Environments that are never cached: the internal ones (users, tokens), which the
    /// `users` command may write from another process.
    static func cacheable(_ environment: String) -> Bool { environment.utf8.first != 1 }

    /// The cached live entry, and the generation to pass to `fill` after a miss.
    func lookup(_ name: Name) -> (entry: ConfigEntry?, generation: UInt64) {
        state.withLock { s in (s.entries[name], s.generation) }
    }

    /// Caches what a reader found (a live entry) if no commit changed entries since `generation`.
    func fill(_ name: Name, _ entry: ConfigEntry, generation: UInt64) {
        guard capacity > 0, Self.cacheable(name.environment), !entry.deleted else { return }
        let size = Self.size(name, entry)
        guard size <= maxBytes else { return }
        state.withLock { s in
            guard s.generation == generation, !s.committing, s.entries[name] == nil else { return }
            while !s.entries.isEmpty && (s.entries.count >= capacity || s.bytes + size > maxBytes) {
                let victim = s.entries.remove(at: s.entries.startIndex)
                s.names[victim.value.id] = nil
                s.bytes -= Self.size(victim.key, victim.value)
            }
            s.entries[name] = entry
            s.names[entry.id] = name
            s.bytes += size
        }
    }

    var count: Int { state.withLock { $0.entries.count } }

    private static func size(_ name: Name, _ entry: ConfigEntry) -> Int {
        entry.ciphertext.utf8.count + name.environment.utf8.count + name.key.utf8.count + 96
    }

    private func invalidate(_ ids: Set<Int64>, committing: Bool) {
        state.withLock { s in
            s.generation &+= 1
            s.committing = committing
            for id in ids {
                guard let name = s.names.removeValue(forKey: id), let entry = s.entries.removeValue(forKey: name) else { continue }
                s.bytes -= Self.size(name, entry)
            }
        }
    }

    // MARK: TransactionObserver (called on the writer connection's queue)

    func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool { eventKind.tableName == "entries" }

    func databaseDidChange(with event: DatabaseEvent) { noteChanged(event.rowID) }

    /// A row of `entries` changed in the transaction under way.
    func noteChanged(_ id: Int64) {
        changed.withLock { _ = $0.insert(id) }
    }

    func databaseWillCommit() throws {
        let ids = changed.withLock { $0 }
        if !ids.isEmpty { invalidate(ids, committing: true) }
    }

    func databaseDidCommit(_ db: Database) { settle() }

    func databaseDidRollback(_ db: Database) { settle() }

    private func settle() {
        let ids = changed.withLock { c in
            defer { c.removeAll(keepingCapacity: true) }
            return c
        }
        if !ids.isEmpty { invalidate(ids, committing: false) }
    }
}
