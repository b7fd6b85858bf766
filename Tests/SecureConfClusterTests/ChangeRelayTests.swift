import Foundation
import SecureConfCrypto
import SecureConfStore
import Synchronization
import Testing

@testable import SecureConfCluster

/// What a node's event hub would be handed.
final class RelayRecorder: ChangeRelaying, Sendable {
    let got = Mutex<[(peer: String, key: String, kind: ChangeKind)]>([])
    func relayed(_ changes: [StoredChange], from peer: String) {
        got.withLock { g in g += changes.map { (peer, $0.revision.key, $0.kind) } }
    }
    var keys: [String] { got.withLock { $0.map(\.key) } }
}

@Suite struct ChangeRelayTests {
    @Test func aFederatedNodeIsHandedEachWriteOfItsPeersOnceAndInOrder() async throws {
        let onB = RelayRecorder()
        let cluster = try TestCluster(["a:1", "b:1"], mode: .federated, relays: ["b:1": onB])
        // Relayed changes are live only: b follows a's feed from where it stood when b first reached it.
        let b = cluster.coordinators["b:1"]!
        #expect(await cluster.eventually(.seconds(10)) { b.relayCursors.withLock { $0["a:1"] } != nil })
        for key in ["k1", "k2", "k3"] { try await cluster.write("a:1", key) }
        #expect(await cluster.eventually(.seconds(5)) { onB.keys == ["k1", "k2", "k3"] }, "\(onB.keys)")
        try await Task.sleep(for: .milliseconds(1500))
        #expect(onB.keys == ["k1", "k2", "k3"], "nothing twice")
        #expect(onB.got.withLock { $0.allSatisfy { $0.peer == "a:1" && $0.kind == .created } })
        await cluster.stop()
    }

    @Test func aPeersChangePageIsCheckedLikeAnyPeerInput() async throws {
        let cluster = try TestCluster(["a:1", "b:1"], running: false, mode: .federated)
        let b = cluster.coordinators["b:1"]!
        let token = Fernet.encrypt(Array("1".utf8), key: TestCluster.key)
        let micros = Int64(Date().timeIntervalSince1970 * 1_000_000)
        let stamp = cluster.stores["a:1"]!.clock.now()
        func revision(origin: String = "a:1", deleted: Bool = false) -> Revision {
            Revision(
                environment: "e",
                key: "k",
                category: nil,
                ciphertext: deleted ? "" : token,
                hlc: stamp,
                origin: origin,
                deleted: deleted,
                createdAt: micros,
                updatedAt: micros
            )
        }
        func page(_ records: [ChangeRecord], through: Int64 = 10, head: Int64 = 10) -> ChangePage {
            ChangePage(through: through, head: head, changes: records)
        }
        let good = ChangeRecord(seq: 5, kind: "created", revision: revision())
        #expect(try b.checkedChanges(page([good]), after: 4, from: "a:1").count == 1)
        for (bad, why) in [
            (page([good]), "at or before the cursor"),
            (page([ChangeRecord(seq: 11, kind: "created", revision: revision())]), "beyond what the page says it read"),
            (page([good], through: 11, head: 10), "through beyond head"),
            (page([ChangeRecord(seq: 6, kind: "created", revision: revision(origin: "c:1"))]), "another node's write"),
            (page([ChangeRecord(seq: 6, kind: "exploded", revision: revision())]), "unknown kind"),
            (page([ChangeRecord(seq: 6, kind: "created", revision: revision(deleted: true))]), "kind disagrees with the revision"),
            (
                page([ChangeRecord(seq: 7, kind: "created", revision: revision()), ChangeRecord(seq: 6, kind: "created", revision: revision())]),
                "out of order"
            ),
        ] as [(ChangePage, String)] {
            #expect(throws: PeerInputError.self, "\(why)") { _ = try b.checkedChanges(bad, after: 5, from: "a:1") }
        }
        await cluster.stop()
    }

    @Test func aFederatedNodeTakesOnlyUsersAndTokensFromItsPeers() async throws {
        let cluster = try TestCluster(["a:1", "b:1"], running: false, mode: .federated)
        let b = cluster.coordinators["b:1"]!
        func revision(_ environment: String) -> Revision {
            // Timestamps of when it is built, as a writer stamps them (taken once at the start,
            // they fell too far behind the stamp on a loaded machine and were refused).
            let micros = Int64(Date().timeIntervalSince1970 * 1_000_000)
            return Revision(
                environment: environment,
                key: "k",
                category: nil,
                ciphertext: Fernet.encrypt(Array("1".utf8), key: TestCluster.key),
                hlc: cluster.stores["a:1"]!.clock.now(),
                origin: "a:1",
                deleted: false,
                createdAt: micros,
                updatedAt: micros
            )
        }
        // A peer's data write is its own (federated nodes keep their entries): refused whole.
        await #expect(throws: ReplicationRefusal.self) {
            _ = try await b.receive(
                ReplicationBatch(origin: "a:1", revisions: [revision(EntryNames.identityEnvironment), revision("prod")]),
                sender: "a:1"
            )
        }
        #expect(try await cluster.stores["b:1"]!.all(tenant: Revision.defaultTenant, environment: EntryNames.identityEnvironment).isEmpty)
        // Users and tokens are everyone's.
        let ack = try await b.receive(ReplicationBatch(origin: "a:1", revisions: [revision(EntryNames.identityEnvironment)]), sender: "a:1")
        #expect(ack.applied == 1)
        await cluster.stop()
    }
}
