/// Serialises `JSONValue`s. `.compact` is for responses; `.python` reproduces Python's
/// `json.dumps(value)` defaults (", " and ": " separators, ASCII-only output), the
/// plaintext format OpenSecureConf encrypts, so stored values are byte-compatible.
public struct JSONWriter {
    public enum Style { case compact, python }

    public internal(set) var bytes: [UInt8] = []
    let style: Style

    public init(style: Style = .compact, capacity: Int = 256) {
        self.style = style
        bytes.reserveCapacity(capacity)
    }

    public static func encode(_ value: JSONValue, style: Style = .compact) -> [UInt8] {
        var w = JSONWriter(style: style)
        w.write(value)
        return w.bytes
    }

    public mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    public mutating func separator() {
        if style == .python { raw(", ") } else { bytes.append(UInt8(ascii: ",")) }
    }

    public mutating func colon() {
        if style == .python { raw(": ") } else { bytes.append(UInt8(ascii: ":")) }
    }

    public mutating func write(_ value: JSONValue) {
        switch value {
        case .null: raw("null")
        case .bool(let b): if b { raw("true") } else { raw("false") }
        case .number(let n): bytes.append(contentsOf: n.utf8)
        case .string(let s): string(s)
        case .array(let elements):
            bytes.append(UInt8(ascii: "["))
            for (i, e) in elements.enumerated() {
                if i > 0 { separator() }
                write(e)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let members):
            bytes.append(UInt8(ascii: "{"))
            for (i, m) in members.enumerated() {
                if i > 0 { separator() }
                string(m.0)
                colon()
                write(m.1)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    /// Appends `"name":` for hand-built objects.
    public mutating func member(_ name: StaticString, first: Bool = false) {
        if !first { separator() }
        bytes.append(UInt8(ascii: "\""))
        raw(name)
        bytes.append(UInt8(ascii: "\""))
        colon()
    }

    public mutating func optionalString(_ s: String?) {
        if let s { string(s) } else { raw("null") }
    }

    public mutating func integer<I: BinaryInteger>(_ i: I) {
        bytes.append(contentsOf: String(i).utf8)
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    public mutating func unicodeEscape(_ unit: UInt16) {
        raw("\\u")
        bytes.append(Self.hex[Int(unit >> 12) & 0xF])
        bytes.append(Self.hex[Int(unit >> 8) & 0xF])
        bytes.append(Self.hex[Int(unit >> 4) & 0xF])
        bytes.append(Self.hex[Int(unit) & 0xF])
    }

    public mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        if style == .python {
            for unit in s.utf16 {
                switch unit {
                case 0x22: raw("\\\"")
                case 0x5C: raw("\\\\")
                case 0x0A: raw("\\n")
                case 0x0D: raw("\\r")
                case 0x09: raw("\\t")
                case 0x08: raw("\\b")
                case 0x0C: raw("\\f")
                case 0x20...0x7E: bytes.append(UInt8(unit))
                default: unicodeEscape(unit)
                }
            }
        } else {
            for b in s.utf8 {
                switch b {
                case 0x22: raw("\\\"")
                case 0x5C: raw("\\\\")
                case 0x0A: raw("\\n")
                case 0x0D: raw("\\r")
                case 0x09: raw("\\t")
                case 0x00...0x1F, 0x7F: unicodeEscape(UInt16(b))
                default: bytes.append(b)
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension JSONWriter {
    /// Appends bytes that are already valid JSON.
    public mutating func appendRaw(_ json: [UInt8]) {
        bytes.append(contentsOf: json)
    }
}
