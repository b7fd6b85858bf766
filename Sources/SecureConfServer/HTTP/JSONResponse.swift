import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SecureConfCore
import SecureConfJSON
import SecureConfStore

/// Builds JSON responses from bytes written by `JSONWriter` (no Codable round-trips on the hot path).
enum JSONResponse {
    static func make(_ status: HTTPResponse.Status = .ok, _ bytes: [UInt8], headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func make(_ status: HTTPResponse.Status = .ok, headers: HTTPFields = [:], _ build: (inout JSONWriter) -> Void) -> Response {
        var w = JSONWriter(capacity: 512)
        build(&w)
        return make(status, w.bytes, headers: headers)
    }

    static func error(status: HTTPResponse.Status, detail: String, headers: HTTPFields = [:]) -> Response {
        make(status, headers: headers) { w in
            w.raw("{")
            w.member("detail", first: true)
            w.string(detail)
            w.raw("}")
        }
    }

    static func message(_ text: String) -> Response {
        make { w in
            w.raw("{")
            w.member("message", first: true)
            w.string(text)
            w.raw("}")
        }
    }
}

extension JSONWriter {
    /// A record as the service returns it, with its `version` when it has one.
    mutating func record(_ r: ConfigRecord, timestamps: Bool = true) {
        record(r.entry, valueJSON: r.valueJSON, version: r.version, timestamps: timestamps)
    }

    /// `{"id","key","category","environment","value","created_at","updated_at"}` with
    /// `valueJSON` already-validated JSON text; without the times for `mode=short`.
    mutating func record(_ entry: ConfigEntry, valueJSON: [UInt8], version: Int? = nil, timestamps: Bool = true) {
        raw("{")
        member("id", first: true); integer(entry.id)
        member("key"); string(entry.key)
        member("category"); optionalString(entry.category)
        member("environment"); string(entry.environment)
        member("value"); appendRaw(valueJSON)
        if timestamps {
            member("created_at"); string(Timestamp.iso8601(micros: entry.createdAt))
            member("updated_at"); string(Timestamp.iso8601(micros: entry.updatedAt))
        }
        if let version { member("version"); integer(version) }
        raw("}")
    }
}
