import SecureConfJSON
import Testing

@testable import SecureConfServer

@Suite struct JSONTests {
    func parse(_ s: String) throws -> JSONValue { try JSONParser.parse(Array(s.utf8)) }

    @Test func parsesAndWritesPythonStyle() throws {
        let value = try parse(#"{"b": [1, 2.50, -0, 1e10, true, false, null], "a": "é\n\"\u0001", "a": "dup"}"#)
        #expect(
            String(decoding: JSONWriter.encode(value, style: .python), as: UTF8.self)
                == #"{"b": [1, 2.50, -0, 1e10, true, false, null], "a": "dup"}"#
        )
        let s = try parse(#""é\n\"\u0001😀\u007f""#)
        #expect(String(decoding: JSONWriter.encode(s, style: .python), as: UTF8.self) == #""\u00e9\n\"\u0001\ud83d\ude00\u007f""#)
        #expect(String(decoding: JSONWriter.encode(s), as: UTF8.self) == "\"é\\n\\\"\\u0001😀\\u007f\"")
    }

    @Test func rejectsInvalidInput() {
        let bad = [
            "", "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "tru", "\"\\x\"", "\"\\ud800\"", "\"a\u{1}\"", "[1] x",
            String(repeating: "[", count: 65) + String(repeating: "]", count: 65), "{\"a\":NaN}", "\"\\u12\"",
        ]
        for s in bad {
            #expect(throws: JSONParseError.self, "\(s.prefix(20))") { try parse(s) }
        }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xED, 0xA0, 0x80, 0x22]) }
        #expect(throws: Never.self) { try parse(String(repeating: "[", count: 64) + String(repeating: "]", count: 64)) }
    }
}

@Suite struct JSONMemberNameTests {
    @Test func canonicallyEquivalentNamesStayDistinct() throws {
        // "é" precomposed and "e" + combining acute: equal as Swift Strings, distinct bytes (Python keeps both).
        let value = try JSONParser.parse(Array("{\"\u{E9}\": 1, \"e\u{301}\": 2}".utf8))
        guard case .object(let members) = value else { Issue.record("not an object"); return }
        #expect(members.count == 2)
        #expect(value["\u{E9}"] == .number("1") && value["e\u{301}"] == .number("2"))
    }
}
