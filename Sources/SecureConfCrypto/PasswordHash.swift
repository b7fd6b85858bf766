import COpenSSL

/// Password hashes for users' logins: scrypt (OpenSSL's EVP_PBE_scrypt) with a random
/// 16-byte salt, encoded `scrypt$<log2 N>$<r>$<p>$<salt>$<hash>` (base64url). Verifying
/// re-derives with the stored parameters and compares in constant time. Each call costs
/// tens of milliseconds and 32 MiB: run it on the key-derivation threads.
public enum PasswordHash {
    public struct Parameters: Sendable, Equatable {
        public var log2N: Int
        public var r: Int
        public var p: Int
        public init(log2N: Int = 15, r: Int = 8, p: Int = 1) {
            (self.log2N, self.r, self.p) = (log2N, r, p)
        }
        /// Within what a stored hash may ask for (a tampered record cannot ask for terabytes).
        var isBounded: Bool { (10...20).contains(log2N) && (1...16).contains(r) && (1...4).contains(p) }
    }

    public static let hashLength = 32

    /// A new hash of `password`.
    public static func make(_ password: String, parameters: Parameters = .init()) -> String {
        let salt = OpenSSL.randomBytes(16)
        let hash = scrypt(Array(password.utf8), salt: salt, parameters) ?? []
        return "scrypt$\(parameters.log2N)$\(parameters.r)$\(parameters.p)$\(Base64URL.encode(salt))$\(Base64URL.encode(hash))"
    }

    /// Whether `password` is the one `encoded` was made from; false for anything malformed.
    public static func verify(_ password: String, against encoded: String) -> Bool {
        let parts = encoded.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "scrypt", let log2N = Int(parts[1]), let r = Int(parts[2]), let p = Int(parts[3]),
            let salt = Base64URL.decode(String(parts[4])), let expected = Base64URL.decode(String(parts[5])),
            expected.count == hashLength
        else { return false }
        let parameters = Parameters(log2N: log2N, r: r, p: p)
        guard parameters.isBounded, let actual = scrypt(Array(password.utf8), salt: salt, parameters) else { return false }
        return OpenSSL.constantTimeEquals(actual, expected)
    }

    private static func scrypt(_ password: [UInt8], salt: [UInt8], _ parameters: Parameters) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: hashLength)
        let n = UInt64(1) << UInt64(parameters.log2N)
        let maxMemory = UInt64(128 * parameters.r) * (n + UInt64(parameters.p) + 2) + 1 << 20
        let ok = password.withUnsafeBufferPointer { pw in
            salt.withUnsafeBufferPointer { s in
                pw.withMemoryRebound(to: CChar.self) { pwc in
                    EVP_PBE_scrypt(
                        pwc.baseAddress,
                        pw.count,
                        s.baseAddress,
                        s.count,
                        n,
                        UInt64(parameters.r),
                        UInt64(parameters.p),
                        maxMemory,
                        &out,
                        out.count
                    )
                }
            }
        }
        return ok == 1 ? out : nil
    }
}
