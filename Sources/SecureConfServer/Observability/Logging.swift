import Foundation
import Logging
import SecureConfJSON
import SecureConfStore
import Synchronization

/// Where log lines go: standard error and optionally a size-rotated file. Lines are
/// handed to a background thread through a bounded queue, so logging never blocks a
/// request; when the queue is full the line is dropped and counted.
public final class LogSink: Sendable {
    private struct State {
        var queue: [String] = []
        var closed = false
    }

    private let state = Mutex(State())
    private let condition = NSCondition()
    private let capacity: Int
    private let filePath: String?
    private let maxBytes: Int
    private let backups: Int
    private let toStandardError: Bool
    private let onDrop: @Sendable () -> Void
    private let finished = NSCondition()
    private let done = Mutex(false)

    public init(
        filePath: String?,
        maxBytes: Int,
        backups: Int,
        toStandardError: Bool = true,
        capacity: Int = 10_000,
        onDrop: @escaping @Sendable () -> Void = {}
    ) {
        self.filePath = filePath
        self.maxBytes = maxBytes
        self.backups = backups
        self.capacity = capacity
        self.toStandardError = toStandardError
        self.onDrop = onDrop
        let thread = Thread { [self] in self.writerLoop() }
        thread.name = "secureconf-log"
        thread.start()
    }

    public func write(_ line: String) {
        let accepted = state.withLock { s -> Bool in
            guard !s.closed, s.queue.count < capacity else { return false }
            s.queue.append(line)
            return true
        }
        if accepted {
            condition.lock(); condition.signal(); condition.unlock()
        } else {
            onDrop()
        }
    }

    /// Writes out what is queued and stops the writer thread.
    public func close() {
        state.withLock { $0.closed = true }
        condition.lock(); condition.signal(); condition.unlock()
        finished.lock()
        while !done.withLock({ $0 }) { _ = finished.wait(until: Date().addingTimeInterval(0.05)) }
        finished.unlock()
    }

    private func writerLoop() {
        var file: FileHandle?
        var size = 0
        if let filePath {
            (file, size) = Self.open(filePath)
        }
        while true {
            var batch: [String] = []
            var closed = false
            condition.lock()
            while true {
                (batch, closed) = state.withLock { s in
                    let b = s.queue
                    s.queue.removeAll(keepingCapacity: true)
                    return (b, s.closed)
                }
                if !batch.isEmpty || closed { break }
                _ = condition.wait(until: Date().addingTimeInterval(0.5))
            }
            condition.unlock()
            if !batch.isEmpty {
                let text = batch.joined(separator: "\n") + "\n"
                let data = Data(text.utf8)
                if toStandardError { FileHandle.standardError.write(data) }
                if let filePath, file != nil {
                    if size + data.count > maxBytes, size > 0 {
                        try? file?.close()
                        Self.rotate(filePath, backups: backups)
                        (file, size) = Self.open(filePath)
                    }
                    file?.write(data)
                    size += data.count
                }
            }
            if closed && batch.isEmpty { break }
        }
        try? file?.synchronize()
        try? file?.close()
        finished.lock()
        done.withLock { $0 = true }
        finished.signal()
        finished.unlock()
    }

    private static func open(_ path: String) -> (FileHandle?, Int) {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: path) {
            FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        guard let handle = FileHandle(forWritingAtPath: path) else { return (nil, 0) }
        let size = (try? handle.seekToEnd()).map(Int.init) ?? 0
        return (handle, size)
    }

    /// path -> path.1 -> path.2 ... keeping `backups` old files.
    private static func rotate(_ path: String, backups: Int) {
        let fm = FileManager.default
        guard backups > 0 else { try? fm.removeItem(atPath: path); return }
        try? fm.removeItem(atPath: "\(path).\(backups)")
        if backups > 1 {
            for i in stride(from: backups - 1, through: 1, by: -1) where fm.fileExists(atPath: "\(path).\(i)") {
                try? fm.moveItem(atPath: "\(path).\(i)", toPath: "\(path).\(i + 1)")
            }
        }
        try? fm.moveItem(atPath: path, toPath: "\(path).1")
    }
}

/// A swift-log handler writing JSON lines (`timestamp`, `level`, `event`, `logger`, `file`,
/// `line`, `function`, `node_id`, metadata) or console lines to a `LogSink`.
public struct SecureConfLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let nodeID: String
    let format: NodeConfiguration.LogFormat
    let sink: LogSink

    public init(label: String, nodeID: String, level: Logger.Level, format: NodeConfiguration.LogFormat, sink: LogSink) {
        self.label = label
        self.nodeID = nodeID
        self.logLevel = level
        self.format = format
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static func levelName(_ level: Logger.Level) -> String {
        switch level {
        case .trace: "TRACE"
        case .debug: "DEBUG"
        case .info: "INFO"
        case .notice: "NOTICE"
        case .warning: "WARNING"
        case .error: "ERROR"
        case .critical: "CRITICAL"
        }
    }

    static func timestamp() -> String { Timestamp.now() }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let file = (event.file as NSString).lastPathComponent
        switch format {
        case .json:
            var w = JSONWriter(capacity: 256)
            w.raw("{")
            w.member("timestamp", first: true); w.string(Self.timestamp())
            w.member("level"); w.string(Self.levelName(event.level))
            w.member("event"); w.string(event.message.description)
            w.member("logger"); w.string(label)
            w.member("file"); w.string(file)
            w.member("line"); w.integer(event.line)
            w.member("function"); w.string(event.function)
            w.member("node_id"); w.string(nodeID)
            for (k, v) in merged.sorted(by: { $0.key < $1.key }) {
                w.raw(","); w.string(k); w.raw(":"); w.string(v.description)
            }
            w.raw("}")
            sink.write(String(decoding: w.bytes, as: UTF8.self))
        case .console:
            var line = "\(Self.timestamp()) \(Self.levelName(event.level)) [\(nodeID)] \(event.message)"
            for (k, v) in merged.sorted(by: { $0.key < $1.key }) { line += " \(k)=\(v)" }
            line += " (\(file):\(event.line))"
            sink.write(line)
        }
    }
}
