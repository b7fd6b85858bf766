// libFuzzer harness for what a peer sends: the replication message decoder, the checks
// every replicated revision passes (RevisionRules), and the store's apply path.
//
// Any input: decoding must return or throw, never crash. Revisions that pass the checks are
// applied to one store (in a temporary directory); applying must not crash, must never
// move the clock past its bound, and must leave the bucket digests equal to a recompute
// from the stored revisions.
//
// Built with -parse-as-library: this file defines no top-level code.

import Foundation
import SecureConfCluster
import SecureConfStore

private let directory: String = {
    let d = NSTemporaryDirectory() + "secureconf-fuzz-replication-\(getpid())"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}()

private let store: ConfigStore = {
    do {
        return try ConfigStore(configuration: .init(path: directory + "/fuzz.db", nodeID: "127.0.0.1:1"))
    } catch {
        fatalError("cannot open the fuzz store: \(error)")
    }
}()

private let rules = RevisionRules(maxAheadMillis: 5000, maxCiphertextBytes: 1 << 20)

private func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var result: Result<T, any Error>?
    Task {
        do { result = .success(try await body()) } catch { result = .failure(error) }
        done.signal()
    }
    done.wait()
    return result!
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(UnsafeBufferPointer(start: data, count: size))
    guard let batch = try? JSONDecoder().decode(ReplicationBatch.self, from: bytes) else { return 0 }
    let accepted = batch.revisions.filter { (try? rules.check($0)) != nil }
    guard !accepted.isEmpty else { return 0 }
    _ = blocking { try await store.apply(batch: accepted) }
    let stamp = store.clock.now()
    precondition(
        HybridLogicalClock.millis(of: stamp) <= HybridLogicalClock.millis(of: store.clock.ceiling()) + 1,
        "the clock moved past its bound: \(stamp)"
    )
    if case .success(let digest) = blocking({ try await store.digest() }),
        case .success(let recomputed) = blocking({ try await store.recomputedDigest() })
    {
        precondition(digest == recomputed, "incremental digest differs from a recompute")
    }
    return 0
}

#if FUZZ_STANDALONE
import FuzzStandalone

@main
enum StandaloneMain {
    static func main() { StandaloneDriver.run(fuzz) }
}
#endif
