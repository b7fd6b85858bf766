import COpenSSL
import Foundation

/// Thin, length-checked wrappers over the system OpenSSL's primitives.
public enum OpenSSL {
    /// `count` bytes from OpenSSL's CSPRNG.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        guard count > 0 else { return bytes }
        let ok = bytes.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32($0.count)) }
        precondition(ok == 1, "OpenSSL RAND_bytes failed: the system has no entropy source")
        return bytes
    }

    /// HMAC-SHA256 of `data` under `key`.
    public static func hmacSHA256<K: ContiguousBytes, D: ContiguousBytes>(key: K, data: D) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var outLength: UInt32 = 32
        key.withUnsafeBytes { k in
            data.withUnsafeBytes { d in
                out.withUnsafeMutableBufferPointer { o in
                    _ = HMAC(
                        EVP_sha256(),
                        k.baseAddress,
                        Int32(k.count),
                        d.baseAddress?.assumingMemoryBound(to: UInt8.self),
                        d.count,
                        o.baseAddress,
                        &outLength
                    )
                }
            }
        }
        return out
    }

    /// SHA-256 of `data`.
    public static func sha256<D: ContiguousBytes>(_ data: D) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        data.withUnsafeBytes { d in
            out.withUnsafeMutableBufferPointer { o in
                _ = SHA256(d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count, o.baseAddress)
            }
        }
        return out
    }

    /// Compares two byte strings in time that depends only on their lengths.
    public static func constantTimeEquals<A: ContiguousBytes, B: ContiguousBytes>(_ a: A, _ b: B) -> Bool {
        a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in
                guard x.count == y.count else { return false }
                guard x.count > 0 else { return true }
                return CRYPTO_memcmp(x.baseAddress, y.baseAddress, x.count) == 0
            }
        }
    }

    /// Overwrites memory in a way the compiler may not optimise away.
    public static func cleanse(_ pointer: UnsafeMutableRawBufferPointer) {
        guard let base = pointer.baseAddress, pointer.count > 0 else { return }
        OPENSSL_cleanse(base, pointer.count)
    }

    enum CipherDirection { case encrypt, decrypt }

    /// AES-128-CBC with PKCS#7 padding. Returns nil when decryption finds bad padding.
    static func aes128CBC(_ direction: CipherDirection, key: UnsafeRawBufferPointer, iv: [UInt8], input: UnsafeRawBufferPointer) -> [UInt8]? {
        guard key.count == 16, iv.count == 16 else { return nil }
        guard let ctx = EVP_CIPHER_CTX_new() else { return nil }
        defer { EVP_CIPHER_CTX_free(ctx) }
        let enc: Int32 = direction == .encrypt ? 1 : 0
        let initOK = iv.withUnsafeBufferPointer { ivp in
            EVP_CipherInit_ex(
                ctx,
                EVP_aes_128_cbc(),
                nil,
                key.baseAddress?.assumingMemoryBound(to: UInt8.self),
                ivp.baseAddress,
                enc
            )
        }
        guard initOK == 1 else { return nil }
        var out = [UInt8](repeating: 0, count: input.count + 16)
        var total: Int32 = 0
        let ok: Bool = out.withUnsafeMutableBufferPointer { o in
            var len: Int32 = 0
            if input.count > 0 {
                guard
                    EVP_CipherUpdate(
                        ctx,
                        o.baseAddress,
                        &len,
                        input.baseAddress?.assumingMemoryBound(to: UInt8.self),
                        Int32(input.count)
                    ) == 1
                else { return false }
            }
            total = len
            guard EVP_CipherFinal_ex(ctx, o.baseAddress.map { $0 + Int(total) }, &len) == 1 else { return false }
            total += len
            return true
        }
        guard ok else {
            out.withUnsafeMutableBytes { cleanse($0) }
            return nil
        }
        out.removeLast(out.count - Int(total))
        return out
    }
}
