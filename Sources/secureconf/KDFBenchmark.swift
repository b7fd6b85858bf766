import ArgumentParser
import Foundation
import SecureConfCrypto

/// Measures key derivation against the SHA-256 floor on this machine.
struct KDFBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-kdf",
        abstract: "Time PBKDF2-HMAC-SHA256 (ours and OpenSSL's) against the SHA-256 compression limit; prints JSON."
    )

    @Option(help: "PBKDF2 iterations.") var iterations: UInt32 = PBKDF2.defaultIterations
    @Option(help: "Repetitions; the best (fastest) run is reported.") var runs: Int = 5

    func best(_ body: () -> Void) -> Double {
        var times: [Double] = []
        for _ in 0..<max(1, runs) {
            let start = ContinuousClock.now
            body()
            let d = ContinuousClock.now - start
            times.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
        }
        return times.min() ?? 0
    }

    func run() throws {
        let salt = OpenSSL.randomBytes(64)
        let password = Array("benchmark-user-key".utf8)
        let ours = best { _ = PBKDF2.sha256(password: password, salt: salt, iterations: iterations) }
        let openssl = best { _ = PBKDF2.opensslSHA256(password: password, salt: salt, iterations: iterations) }
        // Two SHA-256 compressions per iteration: the least any PBKDF2 can do.
        let floor = best { PBKDF2.compressBlocks(UInt64(iterations) * 2) }
        let result: [String: Any] = [
            "iterations": iterations,
            "secureconf_pbkdf2_ms": (ours * 100).rounded() / 100,
            "openssl_pkcs5_pbkdf2_ms": (openssl * 100).rounded() / 100,
            "sha256_limit_ms": (floor * 100).rounded() / 100,
            "ratio_to_limit": ((ours / floor) * 100).rounded() / 100,
            "speedup_over_openssl": ((openssl / ours) * 100).rounded() / 100,
        ]
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
