import CSecureConfCurl
import Foundation

/// HTTP over libcurl, the one HTTP client of the stack: node-to-node requests and the client
/// library both go through it. Calls block the calling thread (callers run them on a thread
/// pool of their own); https is always verified, against `caFile` (PEM) when given, else the
/// system trust store. No redirects are followed.
public enum CurlHTTP {
    private static let initialised: Void = sc_http_global_init()

    /// A reply, whatever its status.
    public struct Reply: Sendable {
        public let status: Int
        public let body: Data
        /// The reply's `X-SecureConf-Signature` header ("" when absent).
        public let signature: String
    }

    /// Ends the requests given it, in flight (within about a second) or later (at once).
    public final class Abort: @unchecked Sendable {
        fileprivate let flag: OpaquePointer?

        public init() { flag = sc_http_abort_new() }
        deinit { sc_http_abort_free(flag) }

        public func trigger() { sc_http_abort_trigger(flag) }
    }

    /// One request: `headers` are `Name: value` lines. Fails (with curl's reason) only when no
    /// reply arrived, or when `abort` was triggered.
    public static func perform(
        method: String,
        url: String,
        headers: [String],
        body: Data?,
        timeoutMillis: Int,
        caFile: String?,
        abort: Abort? = nil
    ) -> Result<Reply, CurlFailure> {
        initialised
        var result = sc_http_result()
        let flag = abort?.flag
        let ok: Int32 = withCStrings(headers) { pointers in
            pointers.withUnsafeBufferPointer { hp in
                if let body {
                    return body.withUnsafeBytes { bp in
                        sc_http_request(
                            method,
                            url,
                            hp.baseAddress,
                            hp.count,
                            bp.bindMemory(to: UInt8.self).baseAddress,
                            bp.count,
                            timeoutMillis,
                            caFile,
                            flag,
                            &result
                        )
                    }
                }
                return sc_http_request(method, url, hp.baseAddress, hp.count, nil, 0, timeoutMillis, caFile, flag, &result)
            }
        }
        defer {
            sc_http_result_free(&result)
            withExtendedLifetime(abort) {}
        }
        guard ok == 1 else { return .failure(CurlFailure(reason: cString(result.error))) }
        let data = result.body.map { Data(bytes: $0, count: result.body_length) } ?? Data()
        return .success(Reply(status: Int(result.status), body: data, signature: cString(result.signature)))
    }

    /// One streamed GET: `onChunk` gets the status and each piece of the body as it arrives
    /// (false ends the transfer); `shouldStop` is asked about once a second, also while nothing
    /// arrives. Ends when the node ends the reply or after `idleTimeoutSeconds` without a byte.
    /// Returns the reply's status, and curl's reason when the transfer ended in an error;
    /// fails when no reply arrived.
    public static func stream(
        url: String,
        headers: [String],
        connectTimeoutMillis: Int,
        idleTimeoutSeconds: Int,
        caFile: String?,
        onChunk: @escaping (Int, UnsafeRawBufferPointer) -> Bool,
        shouldStop: @escaping () -> Bool
    ) -> Result<(status: Int, ended: String?), CurlFailure> {
        initialised
        let callbacks = StreamCallbacks(onChunk: onChunk, shouldStop: shouldStop)
        var status = 0
        var error = [CChar](repeating: 0, count: 256)
        let ok: Int32 = withExtendedLifetime(callbacks) {
            let context = Unmanaged.passUnretained(callbacks).toOpaque()
            return withCStrings(headers) { pointers in
                pointers.withUnsafeBufferPointer { hp in
                    sc_http_stream(
                        url,
                        hp.baseAddress,
                        hp.count,
                        connectTimeoutMillis,
                        idleTimeoutSeconds,
                        caFile,
                        { context, status, data, length in
                            let callbacks = Unmanaged<StreamCallbacks>.fromOpaque(context!).takeUnretainedValue()
                            return callbacks.onChunk(Int(status), UnsafeRawBufferPointer(start: data, count: length)) ? 1 : 0
                        },
                        { context in
                            Unmanaged<StreamCallbacks>.fromOpaque(context!).takeUnretainedValue().shouldStop() ? 1 : 0
                        },
                        context,
                        &status,
                        &error,
                        error.count
                    )
                }
            }
        }
        let reason = String(decoding: error.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard ok == 1 else { return .failure(CurlFailure(reason: reason.isEmpty ? "no reply" : reason)) }
        return .success((status, reason.isEmpty ? nil : reason))
    }

    private final class StreamCallbacks {
        let onChunk: (Int, UnsafeRawBufferPointer) -> Bool
        let shouldStop: () -> Bool
        init(onChunk: @escaping (Int, UnsafeRawBufferPointer) -> Bool, shouldStop: @escaping () -> Bool) {
            self.onChunk = onChunk
            self.shouldStop = shouldStop
        }
    }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        let duplicates = strings.map { strdup($0) }
        defer { duplicates.forEach { free($0) } }
        return body(duplicates.map { UnsafePointer($0) })
    }

    private static func cString<T>(_ tuple: T) -> String {
        withUnsafeBytes(of: tuple) { raw in String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self) }
    }
}

/// No reply arrived: curl's reason (connection refused, certificate not trusted, timeout, ...).
public struct CurlFailure: Error, Sendable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}
