import Foundation

/// A 32-byte Fernet key (16 signing bytes, then 16 encryption bytes) in memory that is
/// zeroed when the last reference goes away.
///
/// `@unchecked Sendable`: the buffer is written once in `init`, only read afterwards, and
/// freed in `deinit`, when no other reference can exist.
public final class DerivedKey: @unchecked Sendable {
    private let storage: UnsafeMutableRawBufferPointer

    /// Takes the key bytes and wipes the caller's array.
    public init(consuming bytes: inout [UInt8]) {
        precondition(bytes.count == 32, "Fernet keys are 32 bytes")
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 32, alignment: 16)
        bytes.withUnsafeBytes { storage.copyMemory(from: $0) }
        bytes.withUnsafeMutableBytes { OpenSSL.cleanse($0) }
    }

    /// A key given in Fernet's own form: 32 bytes, base64url.
    public convenience init?(fernetKey: String) {
        guard var bytes = Base64URL.decode(fernetKey), bytes.count == 32 else { return nil }
        self.init(consuming: &bytes)
    }

    deinit {
        OpenSSL.cleanse(storage)
        storage.deallocate()
    }

    func withSigningKey<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        body(UnsafeRawBufferPointer(rebasing: storage[0..<16]))
    }

    func withEncryptionKey<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        body(UnsafeRawBufferPointer(rebasing: storage[16..<32]))
    }

    /// HMAC-SHA256 of `label` under the whole key: a stable identifier of the key (the same
    /// after a restart and on every node sharing the salt) that reveals no more about the
    /// user key than a PBKDF2 output does.
    public func identifier(label: [UInt8]) -> [UInt8] {
        OpenSSL.hmacSHA256(key: UnsafeRawBufferPointer(storage), data: label)
    }

    /// The key in Fernet's base64url form (for interop tests only).
    public var fernetKeyString: String { Base64URL.encode(UnsafeRawBufferPointer(storage)) }
}
