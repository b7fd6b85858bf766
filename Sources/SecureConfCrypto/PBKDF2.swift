import COpenSSL
import CSecureConfKDF

/// PBKDF2-HMAC-SHA256 key derivation.
public enum PBKDF2 {
    /// OpenSecureConf's parameters: 480,000 iterations, 32-byte keys.
    public static let defaultIterations: UInt32 = 480_000
    public static let keyLength = 32

    /// Derives a key with the precomputed-HMAC-state implementation.
    public static func sha256(password: [UInt8], salt: [UInt8], iterations: UInt32 = defaultIterations, length: Int = keyLength) -> [UInt8] {
        precondition(iterations > 0 && length > 0, "PBKDF2 needs at least one iteration and one output byte")
        var out = [UInt8](repeating: 0, count: length)
        let ok = password.withUnsafeBufferPointer { p in
            salt.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBufferPointer { o in
                    sc_pbkdf2_hmac_sha256(p.baseAddress, p.count, s.baseAddress, s.count, iterations, o.baseAddress, o.count)
                }
            }
        }
        precondition(ok == 1, "sc_pbkdf2_hmac_sha256 rejected valid arguments")
        return out
    }

    /// OpenSSL's own `PKCS5_PBKDF2_HMAC`: the reference the fast path is checked against.
    public static func opensslSHA256(password: [UInt8], salt: [UInt8], iterations: UInt32 = defaultIterations, length: Int = keyLength) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        let ok = password.withUnsafeBufferPointer { p in
            salt.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBufferPointer { o in
                    p.withMemoryRebound(to: CChar.self) { pc in
                        PKCS5_PBKDF2_HMAC(
                            pc.baseAddress,
                            Int32(pc.count),
                            s.baseAddress,
                            Int32(s.count),
                            Int32(iterations),
                            EVP_sha256(),
                            Int32(o.count),
                            o.baseAddress
                        )
                    }
                }
            }
        }
        precondition(ok == 1, "PKCS5_PBKDF2_HMAC failed")
        return out
    }

    /// Runs `blocks` SHA-256 compressions: the floor under any PBKDF2 implementation
    /// (two compressions per iteration). Used by the benchmark.
    public static func compressBlocks(_ blocks: UInt64) {
        sc_sha256_compress_blocks(blocks)
    }
}
