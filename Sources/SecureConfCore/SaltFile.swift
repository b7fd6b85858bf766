import Foundation
import SecureConfCrypto

/// Why the salt cannot be used; the message names the file and the remedy.
public struct SaltError: Error, CustomStringConvertible {
    public let description: String
}

/// The cluster's 64-byte PBKDF2 salt, stored raw in a 0600 file, as OpenSecureConf does.
public enum SaltFile {
    public static let length = 64

    /// The salt's bytes, or nil if the file does not exist.
    public static func read(at path: String) throws(SaltError) -> [UInt8]? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SaltError(description: "salt file \(path) exists but cannot be read (check its owner and permissions)")
        }
        return [UInt8](data)
    }

    /// Writes a new salt atomically: a temporary file created 0600, fsync, rename, fsync of the directory.
    /// Fails if a salt file already exists: a salt is never replaced.
    public static func create(at path: String, salt: [UInt8] = OpenSSL.randomBytes(length)) throws(SaltError) {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw SaltError(description: "cannot create directory \(directory) for the salt file: \(error.localizedDescription)")
        }
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw SaltError(description: "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        let written = salt.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == salt.count, synced else {
            unlink(temporary)
            throw SaltError(description: "cannot write the salt to \(temporary): \(String(cString: strerror(errno)))")
        }
        // link() refuses to replace an existing file, unlike rename().
        guard link(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw SaltError(description: "cannot install the salt file \(path): \(reason)")
        }
        unlink(temporary)
        let dfd = open(directory, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// A short public identifier of a salt: the first 16 hex digits of SHA-256 over a
    /// domain prefix and the salt. It reveals nothing usable about the salt.
    public static func fingerprint(_ salt: [UInt8]) -> String {
        let digest = OpenSSL.sha256(Array("secureconf-salt-fingerprint:".utf8) + salt)
        return digest.prefix(8).map { String(format: "%02x", $0) }.joined()
    }
}
