import SecureConfJSON
import Testing

@testable import SecureConfCore

@Suite struct JSONPatchTests {
    func diff(_ a: String, _ b: String) throws -> [JSONPatch.Operation] {
        JSONPatch.diff(from: try JSONParser.parse(Array(a.utf8)), to: try JSONParser.parse(Array(b.utf8)))
    }

    @Test func escapesAndCompares() throws {
        #expect(JSONPatch.escape("a/b~c") == "a~1b~0c" && JSONPatch.escape("~1") == "~01")
        #expect(try diff(#"{"a":1,"b":2}"#, #"{"b":2,"a":1}"#).isEmpty, "member order does not matter")
        #expect(try diff("1.0", "1").isEmpty && diff("1e2", "100").isEmpty && diff("-0", "0").isEmpty)
        #expect(try diff("1", "2") == [.replace(path: "", value: .number("2"))])
        #expect(try diff("[1,2,3,4]", "[1]") == [.remove(path: "/3"), .remove(path: "/2"), .remove(path: "/1")], "removed from the end")
        #expect(try diff("{}", #"{"":0}"#) == [.add(path: "/", value: .number("0"))], "the empty member name")
        #expect(try diff("null", "{}") == [.replace(path: "", value: .object([]))])
        #expect(JSONPatch.canonicalNumber("1e99999999999999999999999") == nil && !JSONPatch.numbersEqual("10e9223372036854775807", "1"))
    }
}
