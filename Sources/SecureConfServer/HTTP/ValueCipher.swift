import SecureConfJSON
import SecureConfCrypto

/// Encrypts and decrypts stored values for handlers, as OpenSecureConf does (Python-style
/// `json.dumps` text in a Fernet token), keeping the derived-key cache and metrics informed.
struct ValueCipher: Sendable {
    let node: SecureConfNode

    /// A new token for `value`; 413 when the token would be larger than a peer accepts
    /// (Python-style escaping can make the text up to six times the body).
    func encrypt(_ value: JSONValue, with key: CachedKey) throws(APIError) -> String {
        let plaintext = JSONWriter.encode(value, style: .python)
        let tokenBytes = ((1 + 8 + 16 + (plaintext.count / 16 + 1) * 16 + 32) + 2) / 3 * 4
        let limit = node.configuration.maxCiphertextBytes
        guard tokenBytes <= limit else {
            throw APIError(.contentTooLarge, "The value is \(tokenBytes) bytes once encoded and encrypted; the limit is \(limit) (OSC_MAX_BODY_BYTES)",
                           kind: "body_too_large")
        }
        return encrypt(plaintext: plaintext, with: key)
    }

    /// A new token (fresh IV) for plaintext that came out of another token.
    func encrypt(plaintext: [UInt8], with key: CachedKey) -> String {
        node.metrics.recordEncryption("encrypt")
        return Fernet.encrypt(plaintext, key: key.key)
    }

    /// The plaintext of `token`; a MAC failure is the caller's wrong key (401).
    func decrypt(_ token: String, with key: CachedKey) throws(APIError) -> [UInt8] {
        node.metrics.recordEncryption("decrypt")
        do {
            let plaintext = try Fernet.decrypt(token, key: key.key)
            node.keys.markProven(key.index)
            return plaintext
        } catch {
            node.keys.reportFailure(key.index)
            throw APIError.wrongUserKey
        }
    }

    /// The plaintext of `token`, or nil if this key does not open it (no cache bookkeeping).
    /// `count: false` leaves the metric to the caller (a list counts its decryptions at once).
    func tryDecrypt(_ token: String, with key: CachedKey, count: Bool = true) -> [UInt8]? {
        if count { node.metrics.recordEncryption("decrypt") }
        return try? Fernet.decrypt(token, key: key.key)
    }

    /// Plaintext as JSON text for a response: as is when it is valid JSON; anything else (an
    /// OpenSecureConf value holding NaN, say) as a JSON string rather than failing the request.
    static func jsonText(_ plaintext: [UInt8]) -> [UInt8] {
        if (try? JSONParser.parse(plaintext, maxDepth: 512)) != nil { return plaintext }
        return JSONWriter.encode(.string(String(decoding: plaintext, as: UTF8.self)))
    }

    /// Plaintext as a JSON value; text that is not JSON (an OpenSecureConf value holding NaN,
    /// say) is taken as a JSON string, as reads return it.
    static func jsonValue(_ plaintext: [UInt8]) -> JSONValue {
        if let value = try? JSONParser.parse(plaintext, maxDepth: 512) { return value }
        return .string(String(decoding: plaintext, as: UTF8.self))
    }
}
