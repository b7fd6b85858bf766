// libFuzzer harness for the JSON parser and writer (SecureConfJSON, used by the server), which see every
// request body.
//
// Any input: JSONParser.parse must return or throw JSONParseError, never crash or hang.
// When it parses: JSONWriter's compact output (what responses carry) and Python-style
// output (the plaintext that gets encrypted) must both re-parse to an equal value, and
// writing is idempotent (encode(parse(encode(v))) == encode(v)).
//
// Built with -parse-as-library: this file defines no top-level code.

import SecureConfJSON

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let value: JSONValue
    do {
        value = try JSONParser.parse(bytes)
    } catch {
        return 0
    }
    for style in [JSONWriter.Style.compact, .python] {
        let written = JSONWriter.encode(value, style: style)
        let again: JSONValue
        do {
            again = try JSONParser.parse(written)
        } catch {
            preconditionFailure(
                "\(style) output of a parsed value does not re-parse (\(error)): "
                    + String(decoding: written.prefix(200), as: UTF8.self)
            )
        }
        precondition(
            again == value,
            "\(style) output re-parses to a different value: "
                + String(decoding: written.prefix(200), as: UTF8.self)
        )
        precondition(JSONWriter.encode(again, style: style) == written, "\(style) writing is not idempotent")
    }
    return 0
}

#if FUZZ_STANDALONE
import FuzzStandalone

@main
enum StandaloneMain {
    static func main() { StandaloneDriver.run(fuzz) }
}
#endif
