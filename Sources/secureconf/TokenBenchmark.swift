import ArgumentParser
import Foundation
import Logging
import SecureConfCore
import SecureConfCrypto
import SecureConfStore

/// Times what a request in `tokens` mode adds: parsing the bearer token, the cached
/// verification and the policy check, in-process, without HTTP noise.
struct TokenBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-token",
        abstract: "Time bearer-token verification (the warm path: parse, cached principal, policy check); prints JSON."
    )

    @Option(help: "Verifications per run.") var count: Int = 200_000
    @Option(help: "Runs; the best is reported.") var runs: Int = 5

    func run() async throws {
        let directory = NSTemporaryDirectory() + "secureconf-bench-token-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try ConfigStore(configuration: .init(path: directory + "/data.db", nodeID: "bench:1"))
        let keys = DerivedKeyCache(salt: OpenSSL.randomBytes(64), configuration: .init(iterations: 1_000))
        // Rechecks never fall inside a run: the warm path alone is timed.
        let identity = IdentityService(
            storage: store,
            keys: keys,
            limiter: AuthFailureLimiter(limit: 0, windowSeconds: 60),
            sealSecret: OpenSSL.randomBytes(32),
            settings: .init(recheckInterval: .seconds(3600), passwordParameters: .init(log2N: 10))
        )
        try await identity.addUser(name: "bench", password: "bench-password", role: .writer, tenant: nil, policies: nil, caller: nil)
        let caller = Caller(userKey: nil, client: "bench", audit: AuditNote(), logger: Logger(label: "bench"))
        let token = try await identity.login(username: "bench", password: "bench-password", caller: caller).token
        _ = try await identity.verify(bearer: token)
        let header = "Bearer " + token
        var best = Double.infinity
        for _ in 0..<max(1, runs) {
            let start = ContinuousClock.now
            for _ in 0..<count {
                let parts = header.split(separator: " ", maxSplits: 1)
                let bearer = try IdentityService.parse(bearer: String(parts[1]))
                guard let principal = try identity.cachedPrincipal(bearer),
                    principal.policy.allows(.read, environment: "production", key: "db.password")
                else { throw ExitCode(1) }
            }
            let d = ContinuousClock.now - start
            best = min(best, (Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) / Double(count))
        }
        await store.close()
        let result: [String: Any] = ["verifications": count, "microseconds_per_verification": (best * 1e6 * 1000).rounded() / 1000]
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
