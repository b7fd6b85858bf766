/// What the domain layer needs from storage: current entries, their revisions and history,
/// atomic writes that carry their audit record, and the sequence of this node's own
/// revisions (for the write quorum). `ConfigStore` (SQLite through GRDB) is the first
/// implementation; another engine implements this protocol without touching the layers above.
///
/// Writes that replace a value take `authenticates`, the caller's proof that its key opens
/// the value being replaced (`StoreError.wrongKey` otherwise), checked inside the write's
/// transaction. A write's `audit` record commits with its data or not at all.
public protocol ConfigStorage: Sendable {
    func entry(environment: String, key: String) async throws -> ConfigEntry?
    func list(environment: String?, category: String?, limit: Int?, offset: Int, afterID: Int64?, includeDeleted: Bool) async throws -> [ConfigEntry]
    func create(
        environment: String,
        key: String,
        category: String?,
        ciphertext: String,
        actor: String?,
        audit: AuditRecordDraft?
    ) async throws -> ConfigEntry
    func update(
        environment: String,
        key: String,
        category: String?,
        ciphertext: String,
        actor: String?,
        audit: AuditRecordDraft?,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> ConfigEntry
    func delete(
        environment: String,
        key: String,
        actor: String?,
        audit: AuditRecordDraft?,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws

    func history(environment: String, key: String) async throws -> KeyHistory?
    func version(_ version: Int, environment: String, key: String) async throws -> (NumberedRevision, entryID: Int64)
    func pastState(environment: String, key: String, atOrBeforeMicros micros: Int64) async throws -> (PastState, entryID: Int64?)
    func pastStates(environment: String, atOrBeforeMicros micros: Int64) async throws -> [(current: ConfigEntry, past: PastState)]
    func rollback(
        environment: String,
        key: String,
        category: String?,
        ciphertext: String,
        actor: String?,
        audit: AuditRecordDraft?,
        authenticates: @escaping @Sendable (String) -> Bool
    ) async throws -> (ConfigEntry, version: Int)
    func restore(environment: String, changes: [PlannedRestore], actor: String?, audit: AuditRecordDraft?) async throws

    func appendAudit(_ draft: AuditRecordDraft) async throws -> AuditRecord
    /// The sequence number of the newest revision this node originated (what a quorum waits for).
    func lastOwnSeq() async throws -> Int64
}

extension ConfigStore: ConfigStorage {}
