// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny")
]

let package = Package(
    name: "SecureConf",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "secureconf", targets: ["secureconf"]),
        .executable(name: "secureconf-ceiling", targets: ["BenchCeiling"]),
        .library(name: "SecureConfCrypto", targets: ["SecureConfCrypto"]),
        .library(name: "SecureConfStore", targets: ["SecureConfStore"]),
        .library(name: "SecureConfPostgres", targets: ["SecureConfPostgres"]),
        .library(name: "SecureConfServer", targets: ["SecureConfServer"]),
        .library(name: "SecureConfJSON", targets: ["SecureConfJSON"]),
        .library(name: "SecureConfCluster", targets: ["SecureConfCluster"]),
        .library(name: "SecureConfCore", targets: ["SecureConfCore"]),
        .library(name: "SecureConfClient", targets: ["SecureConfClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(
            name: "SecureConfJSON",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CSecureConfKDF",
            linkerSettings: [.linkedLibrary("crypto")]
        ),
        .target(
            name: "SecureConfCrypto",
            dependencies: ["COpenSSL", "CSecureConfKDF"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SecureConfStore",
            dependencies: [
                "SecureConfCrypto",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The storage protocol on PostgreSQL (OSC_DATABASE_URL).
        .target(
            name: "SecureConfPostgres",
            dependencies: [
                "SecureConfStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CSecureConfCurl",
            linkerSettings: [.linkedLibrary("curl")]
        ),
        .target(
            name: "SecureConfHTTP",
            dependencies: ["CSecureConfCurl"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SecureConfCluster",
            dependencies: [
                "SecureConfHTTP",
                "SecureConfCrypto",
                .product(name: "NIOPosix", package: "swift-nio"),
                "SecureConfStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SecureConfCore",
            dependencies: [
                "SecureConfCrypto",
                "SecureConfStore",
                "SecureConfCluster",
                "SecureConfJSON",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SecureConfServer",
            dependencies: [
                "SecureConfCore",
                "SecureConfPostgres",
                "SecureConfCrypto",
                "SecureConfStore",
                "SecureConfCluster",
                "SecureConfJSON",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            ],
            exclude: ["Console"],
            swiftSettings: swiftSettings,
            plugins: ["EmbedConsole"]
        ),
        .executableTarget(name: "ConsoleEmbedder", swiftSettings: swiftSettings),
        // The benchmark's HTTP ceiling (bench/bench.py): Hummingbird answering a constant body.
        .executableTarget(
            name: "BenchCeiling",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .plugin(name: "EmbedConsole", capability: .buildTool(), dependencies: ["ConsoleEmbedder"]),
        .target(
            name: "SecureConfClient",
            dependencies: ["SecureConfJSON", "SecureConfHTTP"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "secureconf",
            dependencies: [
                "SecureConfServer",
                "SecureConfCore",
                "SecureConfStore",
                "SecureConfClient",
                "SecureConfCrypto",
                "SecureConfJSON",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SecureConfCryptoTests",
            dependencies: ["SecureConfCrypto"],
            resources: [.copy("Vectors")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SecureConfStoreTests",
            dependencies: ["SecureConfStore", "SecureConfPostgres", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SecureConfClusterTests",
            dependencies: [
                "SecureConfCluster", "SecureConfStore", "SecureConfCrypto", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SecureConfCoreTests",
            dependencies: ["SecureConfCore", "SecureConfStore", "SecureConfCrypto", "SecureConfJSON"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SecureConfServerTests",
            dependencies: [
                "SecureConfServer",
                "SecureConfCore",
                "SecureConfClient",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
