import Foundation

/// Why a Fernet token was refused. Callers should treat every case alike
/// ("invalid token"); the cases exist for tests and diagnostics.
public enum FernetError: Error, Equatable, CustomStringConvertible {
    case malformed
    case badSignature
    case badPadding
    case expired
    case fromTheFuture

    public var description: String {
        switch self {
        case .malformed: "token is not a well-formed Fernet token"
        case .badSignature: "token signature does not match the key"
        case .badPadding: "token plaintext padding is invalid"
        case .expired: "token is older than its time-to-live"
        case .fromTheFuture: "token timestamp is too far in the future"
        }
    }
}

/// Fernet (https://github.com/fernet/spec): AES-128-CBC + HMAC-SHA256, byte-compatible
/// with Python's `cryptography.fernet`.
public enum Fernet {
    static let version: UInt8 = 0x80
    static let maxClockSkew: Int64 = 60
    /// version + timestamp + IV + one AES block + HMAC
    static let minimumTokenLength = 1 + 8 + 16 + 16 + 32

    /// Encrypts `plaintext` into a base64url token stamped with `now`.
    public static func encrypt(_ plaintext: [UInt8], key: DerivedKey, now: Date = Date(), iv: [UInt8]? = nil) -> String {
        let iv = iv ?? OpenSSL.randomBytes(16)
        precondition(iv.count == 16, "Fernet IVs are 16 bytes")
        let timestamp = UInt64(max(0, Int64(now.timeIntervalSince1970.rounded(.down))))
        let ciphertext = key.withEncryptionKey { ek in
            plaintext.withUnsafeBytes { p in OpenSSL.aes128CBC(.encrypt, key: ek, iv: iv, input: p) }
        }
        guard let ciphertext else { preconditionFailure("AES-128-CBC encryption failed in OpenSSL") }
        var token = [UInt8]()
        token.reserveCapacity(1 + 8 + 16 + ciphertext.count + 32)
        token.append(version)
        for shift in stride(from: 56, through: 0, by: -8) { token.append(UInt8(truncatingIfNeeded: timestamp >> UInt64(shift))) }
        token.append(contentsOf: iv)
        token.append(contentsOf: ciphertext)
        let mac = key.withSigningKey { sk in OpenSSL.hmacSHA256(key: sk, data: token) }
        token.append(contentsOf: mac)
        return Base64URL.encode(token)
    }

    /// The token's embedded creation time (seconds since 1970), without verifying it.
    public static func timestamp(of token: String) -> UInt64? {
        guard let bytes = Base64URL.decode(token), bytes.count >= minimumTokenLength, bytes[0] == version else { return nil }
        return bytes[1...8].reduce(0) { ($0 << 8) | UInt64($1) }
    }

    /// The embedded creation time of a token that is well formed (version byte, length of
    /// whole AES blocks plus the fixed parts), without verifying its MAC; nil otherwise.
    public static func wellFormedTimestamp(of token: String) -> UInt64? {
        guard let bytes = Base64URL.decode(token), bytes.count >= minimumTokenLength, bytes[0] == version,
            (bytes.count - (1 + 8 + 16 + 32)) % 16 == 0
        else { return nil }
        return bytes[1...8].reduce(0) { ($0 << 8) | UInt64($1) }
    }

    /// Verifies the MAC (constant time) and only then decrypts. `ttl` nil skips the age
    /// checks, as `cryptography`'s `Fernet.decrypt(token)` does.
    public static func decrypt(_ token: String, key: DerivedKey, ttl: Int64? = nil, now: Date = Date()) throws(FernetError) -> [UInt8] {
        guard let bytes = Base64URL.decode(token) else { throw .malformed }
        guard bytes.count >= minimumTokenLength, bytes[0] == version,
            (bytes.count - (1 + 8 + 16 + 32)) % 16 == 0
        else { throw .malformed }
        let macStart = bytes.count - 32
        let expected = key.withSigningKey { sk in
            bytes.withUnsafeBytes { OpenSSL.hmacSHA256(key: sk, data: UnsafeRawBufferPointer(rebasing: $0[0..<macStart])) }
        }
        let valid = bytes.withUnsafeBytes { OpenSSL.constantTimeEquals(expected, UnsafeRawBufferPointer(rebasing: $0[macStart...])) }
        guard valid else { throw .badSignature }
        if let ttl {
            let stamp = Int64(bitPattern: bytes[1...8].reduce(UInt64(0)) { ($0 << 8) | UInt64($1) })
            let current = Int64(now.timeIntervalSince1970.rounded(.down))
            // Timestamps come from the token: compare without overflowing on hostile values.
            let (expiry, expiryOverflow) = stamp.addingReportingOverflow(ttl)
            if !expiryOverflow && expiry < current { throw .expired }
            if stamp < 0 && ttl >= 0 { throw .expired }
            let (latest, latestOverflow) = current.addingReportingOverflow(maxClockSkew)
            if !latestOverflow && latest < stamp { throw .fromTheFuture }
        }
        let iv = Array(bytes[9..<25])
        let plaintext = key.withEncryptionKey { ek in
            bytes.withUnsafeBytes { OpenSSL.aes128CBC(.decrypt, key: ek, iv: iv, input: UnsafeRawBufferPointer(rebasing: $0[25..<macStart])) }
        }
        guard let plaintext else { throw .badPadding }
        return plaintext
    }
}
