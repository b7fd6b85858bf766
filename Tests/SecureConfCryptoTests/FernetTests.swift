import Foundation
import Testing

@testable import SecureConfCrypto

/// The Fernet spec's vectors (generate.json, verify.json, invalid.json), as shipped in
/// PyPI's `cryptography_vectors` package, under Tests/SecureConfCryptoTests/Vectors.
struct FernetVector: Decodable {
    let token: String
    let now: String
    let iv: [UInt8]?
    let src: String?
    let secret: String
    let ttl_sec: Int64?
    let desc: String?
}

func loadVectors(_ name: String) throws -> [FernetVector] {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Vectors"))
    return try JSONDecoder().decode([FernetVector].self, from: Data(contentsOf: url))
}

func parseDate(_ text: String) throws -> Date {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    return try #require(formatter.date(from: text), "bad date \(text)")
}

@Suite struct FernetTests {
    @Test func generateVectors() throws {
        let vectors = try loadVectors("generate")
        #expect(!vectors.isEmpty)
        for v in vectors {
            let key = try #require(DerivedKey(fernetKey: v.secret))
            let token = Fernet.encrypt(Array(try #require(v.src).utf8), key: key, now: try parseDate(v.now), iv: try #require(v.iv))
            #expect(token == v.token)
        }
    }

    @Test func verifyVectors() throws {
        let vectors = try loadVectors("verify")
        #expect(!vectors.isEmpty)
        for v in vectors {
            let key = try #require(DerivedKey(fernetKey: v.secret))
            let plaintext = try Fernet.decrypt(v.token, key: key, ttl: v.ttl_sec, now: try parseDate(v.now))
            #expect(String(decoding: plaintext, as: UTF8.self) == v.src)
        }
    }

    @Test func invalidVectorsAreRefused() throws {
        let vectors = try loadVectors("invalid")
        #expect(vectors.count >= 8)
        for v in vectors {
            let key = try #require(DerivedKey(fernetKey: v.secret))
            #expect(throws: FernetError.self, "\(v.desc ?? "?") must be refused") {
                try Fernet.decrypt(v.token, key: key, ttl: v.ttl_sec, now: try parseDate(v.now))
            }
        }
    }

    @Test func roundTripAndWrongKey() throws {
        var a = OpenSSL.randomBytes(32)
        var b = OpenSSL.randomBytes(32)
        let keyA = DerivedKey(consuming: &a)
        let keyB = DerivedKey(consuming: &b)
        #expect(a.allSatisfy { $0 == 0 }, "the caller's copy of the key is wiped")
        for length in [0, 1, 15, 16, 17, 1000] {
            let message = OpenSSL.randomBytes(length)
            let token = Fernet.encrypt(message, key: keyA)
            #expect(try Fernet.decrypt(token, key: keyA) == message)
            #expect(throws: FernetError.badSignature) { try Fernet.decrypt(token, key: keyB) }
        }
    }

    @Test func tamperedTokensAreRefused() throws {
        var bytes = OpenSSL.randomBytes(32)
        let key = DerivedKey(consuming: &bytes)
        let token = Fernet.encrypt(Array("secret".utf8), key: key)
        var raw = try #require(Base64URL.decode(token))
        for i in [0, 5, 20, 40, raw.count - 1] {
            raw[i] ^= 0x01
            #expect(throws: FernetError.self) { try Fernet.decrypt(Base64URL.encode(raw), key: key) }
            raw[i] ^= 0x01
        }
        for garbage in ["", "%%%", "gAAAAA", String(repeating: "A", count: 200), token + "!"] {
            #expect(throws: FernetError.self) { try Fernet.decrypt(garbage, key: key) }
        }
    }
}

/// Interop with Python's `cryptography` package, run as a subprocess.
@Suite struct PythonInteropTests {
    static func python(_ script: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw InteropError(description: "python3 failed: \(String(decoding: errors, as: UTF8.self))")
        }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    struct InteropError: Error, CustomStringConvertible { let description: String }

    static let derive = """
        import sys, base64
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
        from cryptography.hazmat.primitives import hashes
        salt = bytes.fromhex(sys.argv[1])
        k = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=480000).derive(sys.argv[2].encode())
        f = Fernet(base64.urlsafe_b64encode(k))
        """

    @Test func pythonDecryptsOurTokens() throws {
        let salt = OpenSSL.randomBytes(64)
        let userKey = "interop-user-key-ü"
        var derived = PBKDF2.sha256(password: Array(userKey.utf8), salt: salt)
        let key = DerivedKey(consuming: &derived)
        let message = #"{"host": "db.internal", "password": "s3cr\u00e9t"}"#
        let token = Fernet.encrypt(Array(message.utf8), key: key)
        let decrypted = try Self.python(Self.derive + "\nprint(f.decrypt(sys.argv[3].encode()).decode())", [hex(salt), userKey, token])
        #expect(decrypted == message)
    }

    @Test func weDecryptPythonTokens() throws {
        let salt = OpenSSL.randomBytes(64)
        let userKey = "another-user-key"
        let message = #"[1, 2.5, "three", true, null]"#
        let token = try Self.python(Self.derive + "\nprint(f.encrypt(sys.argv[3].encode()).decode())", [hex(salt), userKey, message])
        var derived = PBKDF2.sha256(password: Array(userKey.utf8), salt: salt)
        let key = DerivedKey(consuming: &derived)
        #expect(String(decoding: try Fernet.decrypt(token, key: key), as: UTF8.self) == message)
        var wrong = PBKDF2.sha256(password: Array("not-the-key".utf8), salt: salt)
        #expect(throws: FernetError.badSignature) { try Fernet.decrypt(token, key: DerivedKey(consuming: &wrong)) }
    }
}

@Suite struct FernetHostileTimestampTests {
    /// A token whose timestamp is near Int64's limits must be refused, not trap on overflow.
    @Test func extremeTimestampsAreRefusedWithoutOverflow() throws {
        var bytes = OpenSSL.randomBytes(32)
        let key = DerivedKey(consuming: &bytes)
        for stamp: UInt64 in [UInt64.max, UInt64(Int64.max), UInt64(Int64.max) + 1, 0x7FFF_FFFF_FFFF_FF00] {
            let token = Fernet.encrypt(Array("x".utf8), key: key, now: Date(timeIntervalSince1970: 0))
            var raw = try #require(Base64URL.decode(token))
            for i in 0..<8 { raw[1 + i] = UInt8(truncatingIfNeeded: stamp >> UInt64(56 - 8 * i)) }
            // Re-sign so that only the timestamp is hostile.
            let macStart = raw.count - 32
            let mac = key.withSigningKey { OpenSSL.hmacSHA256(key: $0, data: Array(raw[0..<macStart])) }
            raw.replaceSubrange(macStart..., with: mac)
            let forged = Base64URL.encode(raw)
            #expect(throws: FernetError.self) { try Fernet.decrypt(forged, key: key, ttl: 60) }
            #expect(throws: FernetError.self) { try Fernet.decrypt(forged, key: key, ttl: Int64.max) }
            #expect(try Fernet.decrypt(forged, key: key) == Array("x".utf8), "without a TTL the timestamp is not checked")
        }
    }
}
