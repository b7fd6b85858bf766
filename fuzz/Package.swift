// swift-tools-version:6.1
// libFuzzer harnesses for SecureConf's parsers of untrusted bytes. Build and run with
// ./run.sh [seconds] (it uses `swift build -c release --scratch-path .build-fuzz
// -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library`), never from the repository root.
import PackageDescription

let package = Package(
    name: "SecureConfFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "SecureConf", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "FuzzFernet",
            dependencies: [.product(name: "SecureConfCrypto", package: "SecureConf"), "FuzzStandalone", "FuzzEntry"]
        ),
        .executableTarget(
            name: "FuzzJSON",
            dependencies: [.product(name: "SecureConfJSON", package: "SecureConf"), "FuzzStandalone", "FuzzEntry"]
        ),
        .executableTarget(
            name: "FuzzReplication",
            dependencies: [.product(name: "SecureConfCluster", package: "SecureConf"), .product(name: "SecureConfStore", package: "SecureConf"),
                           "FuzzStandalone", "FuzzEntry"]
        ),
        // <Module>_main for SwiftPM's entry-point renaming, forwarding to libFuzzer (see entry.c).
        .target(name: "FuzzEntry"),
        // Only used by the -DFUZZ_STANDALONE fallback build (toolchains without libFuzzer).
        .target(name: "FuzzStandalone"),
    ]
)
