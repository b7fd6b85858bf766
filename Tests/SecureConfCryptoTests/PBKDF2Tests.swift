import Testing

@testable import SecureConfCrypto

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

@Suite struct PBKDF2Tests {
    /// RFC 7914 §11 and the widely published PBKDF2-HMAC-SHA256 vectors.
    static let vectors: [(password: String, salt: String, iterations: UInt32, length: Int, expected: String)] = [
        (
            "passwd", "salt", 1, 64,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
        ),
        (
            "Password", "NaCl", 80000, 64,
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"
        ),
        ("password", "salt", 4096, 32, "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"),
        (
            "passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 40,
            "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1c635518c7dac47e9"
        ),
    ]

    @Test func knownAnswerVectors() {
        for v in Self.vectors {
            let fast = PBKDF2.sha256(password: Array(v.password.utf8), salt: Array(v.salt.utf8), iterations: v.iterations, length: v.length)
            let reference = PBKDF2.opensslSHA256(
                password: Array(v.password.utf8),
                salt: Array(v.salt.utf8),
                iterations: v.iterations,
                length: v.length
            )
            #expect(hex(fast) == v.expected, "fast PBKDF2 for \(v.password)/\(v.salt)/\(v.iterations)")
            #expect(hex(reference) == v.expected, "OpenSSL PBKDF2 for \(v.password)/\(v.salt)/\(v.iterations)")
        }
    }

    @Test func matchesOpenSSLOnRandomInputs() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<200 {
            // Password lengths cross the 64-byte HMAC block (longer keys are hashed first).
            let password = (0..<Int.random(in: 0...150, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let salt = (0..<Int.random(in: 0...130, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let iterations = UInt32.random(in: 1...(round < 10 ? 20_000 : 600), using: &generator)
            let length = Int.random(in: 1...100, using: &generator)
            let fast = PBKDF2.sha256(password: password, salt: salt, iterations: iterations, length: length)
            let reference = PBKDF2.opensslSHA256(password: password, salt: salt, iterations: iterations, length: length)
            #expect(
                fast == reference,
                "round \(round): \(password.count)-byte password, \(salt.count)-byte salt, \(iterations) iterations, \(length) bytes"
            )
        }
    }

    @Test func openSecureConfParametersMatchOpenSSL() {
        let salt = OpenSSL.randomBytes(64)
        let password = Array("a user key of some length".utf8)
        #expect(PBKDF2.sha256(password: password, salt: salt) == PBKDF2.opensslSHA256(password: password, salt: salt))
    }
}
