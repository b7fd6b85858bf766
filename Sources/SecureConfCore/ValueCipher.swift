import SecureConfCrypto
import SecureConfJSON

/// The one value cipher: encrypts and decrypts stored values as OpenSecureConf does
/// (Python-style `json.dumps` text in a Fernet token), counting every operation.
public struct ValueCipher: Sendable {
    let observer: any OperationObserver
    /// The largest token a peer accepts (`NodeConfiguration.maxCiphertextBytes`).
    let maxTokenBytes: Int

    public init(observer: any OperationObserver, maxTokenBytes: Int) {
        self.observer = observer
        self.maxTokenBytes = maxTokenBytes
    }

    /// A new token for `value`; 413 when the token would be larger than a peer accepts
    /// (Python-style escaping can make the text up to six times the body).
    public func encrypt(_ value: JSONValue, with key: CachedKey) throws(ServiceError) -> String {
        let plaintext = JSONWriter.encode(value, style: .python)
        let tokenBytes = ((1 + 8 + 16 + (plaintext.count / 16 + 1) * 16 + 32) + 2) / 3 * 4
        guard tokenBytes <= maxTokenBytes else {
            throw ServiceError(
                .bodyTooLarge,
                "The value is \(tokenBytes) bytes once encoded and encrypted; the limit is \(maxTokenBytes) (OSC_MAX_BODY_BYTES)"
            )
        }
        return encrypt(plaintext: plaintext, with: key)
    }

    /// A new token (fresh IV) for plaintext that came out of another token.
    public func encrypt(plaintext: [UInt8], with key: CachedKey) -> String {
        observer.recordEncryption("encrypt", count: 1)
        return Fernet.encrypt(plaintext, key: key.key)
    }

    /// The plaintext of `token`; a MAC failure is the caller's wrong key (401).
    public func decrypt(_ token: String, with key: CachedKey) throws(ServiceError) -> [UInt8] {
        guard let plaintext = tryDecrypt(token, with: key) else { throw ServiceError.wrongUserKey }
        return plaintext
    }

    /// The plaintext of `token`, or nil if this key does not open it.
    /// `count: false` leaves the metric to the caller (a list counts its decryptions at once).
    public func tryDecrypt(_ token: String, with key: CachedKey, count: Bool = true) -> [UInt8]? {
        if count { observer.recordEncryption("decrypt", count: 1) }
        return try? Fernet.decrypt(token, key: key.key)
    }

    /// Whether `token` opens with `key`: the store's check that a caller may replace a value.
    public static func authenticator(_ key: CachedKey) -> @Sendable (String) -> Bool {
        let derived = key.key
        return { token in (try? Fernet.decrypt(token, key: derived)) != nil }
    }

    /// Plaintext as JSON text for a response: as is when it is valid JSON; anything else (an
    /// OpenSecureConf value holding NaN, say) as a JSON string rather than failing the request.
    public static func jsonText(_ plaintext: [UInt8]) -> [UInt8] {
        if (try? JSONParser.parse(plaintext, maxDepth: 512)) != nil { return plaintext }
        return JSONWriter.encode(.string(String(decoding: plaintext, as: UTF8.self)))
    }

    /// Plaintext as a JSON value; text that is not JSON (an OpenSecureConf value holding NaN,
    /// say) is taken as a JSON string, as reads return it.
    public static func jsonValue(_ plaintext: [UInt8]) -> JSONValue {
        if let value = try? JSONParser.parse(plaintext, maxDepth: 512) { return value }
        return .string(String(decoding: plaintext, as: UTF8.self))
    }
}
