import Foundation

/// URL-safe base64 (RFC 4648 §5) as Fernet uses it: padded on output, padding optional on input.
public enum Base64URL {
    public static func encode<D: ContiguousBytes>(_ bytes: D) -> String {
        let standard = bytes.withUnsafeBytes { Data($0) }.base64EncodedString()
        var out = String()
        out.reserveCapacity(standard.utf8.count)
        for c in standard.unicodeScalars {
            switch c {
            case "+": out.unicodeScalars.append("-")
            case "/": out.unicodeScalars.append("_")
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// Decodes URL-safe base64; nil for any character outside the alphabet or a bad length.
    public static func decode(_ text: String) -> [UInt8]? {
        var scalars = [UInt8]()
        scalars.reserveCapacity(text.utf8.count + 3)
        var sawPadding = false
        for c in text.utf8 {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                if sawPadding { return nil }
                scalars.append(c)
            case UInt8(ascii: "-"):
                if sawPadding { return nil }
                scalars.append(UInt8(ascii: "+"))
            case UInt8(ascii: "_"):
                if sawPadding { return nil }
                scalars.append(UInt8(ascii: "/"))
            case UInt8(ascii: "="):
                sawPadding = true
                scalars.append(c)
            default:
                return nil
            }
        }
        while scalars.count % 4 != 0 { scalars.append(UInt8(ascii: "=")) }
        guard let data = Data(base64Encoded: Data(scalars)) else { return nil }
        return [UInt8](data)
    }
}
