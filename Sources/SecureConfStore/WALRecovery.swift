import Foundation
import GRDB
import Synchronization

/// What SQLite said when it replayed a write-ahead log left by an unclean stop: the store
/// compares the frames recovered with the frames the file held, and warns when fewer were
/// recovered (the rest was not committed, or was damaged).
enum WALRecovery {
    private static let recovered = Mutex<[String: Int]>([:])

    /// Installs SQLite's error-log callback once, before the first connection opens.
    static let installed: Void = {
        Database.logError = { _, message in
            // "recovered N frames from WAL file PATH"
            guard message.hasPrefix("recovered "), let range = message.range(of: " frames from WAL file ") else { return }
            guard let frames = Int(message[message.index(message.startIndex, offsetBy: 10)..<range.lowerBound]) else { return }
            let path = String(message[range.upperBound...])
            recovered.withLock { $0[path] = frames }
        }
    }()

    /// Frames in the WAL file at `walPath` (0 when absent or empty).
    static func frames(inWALAt walPath: String) -> Int {
        guard let handle = FileHandle(forReadingAtPath: walPath) else { return 0 }
        defer { try? handle.close() }
        guard let header = try? handle.read(upToCount: 32), header.count == 32,
            let size = (try? FileManager.default.attributesOfItem(atPath: walPath)[.size]) as? Int
        else { return 0 }
        let pageSize = header[8..<12].reduce(0) { ($0 << 8) | Int($1) }
        guard pageSize >= 512 else { return 0 }
        return max(0, (size - 32) / (24 + pageSize))
    }

    /// Frames SQLite reported recovering from the WAL at `walPath`, if it did.
    static func recoveredFrames(walPath: String) -> Int? {
        recovered.withLock { s in
            s.first { $0.key == walPath || $0.key.hasSuffix(walPath) || walPath.hasSuffix($0.key) }?.value
        }
    }
}
