import SecureConfJSON

/// RFC 6902 JSON Patch operations that turn one JSON value into another.
///
/// Objects are compared by member name (order does not matter): members only in `from` are
/// removed, members only in `to` are added, common members are diffed recursively. Arrays are
/// compared by index: common indexes are diffed, extra elements of `to` are added in
/// ascending order, surplus elements of `from` are removed from the end. Anything else that
/// differs (scalars, or two values of different types) is a `replace`, at path "" for the
/// whole value. Applying the operations in order to `from` gives `to`.
public enum JSONPatch {
    public enum Operation: Equatable, Sendable {
        case add(path: String, value: JSONValue)
        case remove(path: String)
        case replace(path: String, value: JSONValue)

        public var json: JSONValue {
            switch self {
            case let .add(path, value): .object([("op", .string("add")), ("path", .string(path)), ("value", value)])
            case let .remove(path): .object([("op", .string("remove")), ("path", .string(path))])
            case let .replace(path, value): .object([("op", .string("replace")), ("path", .string(path)), ("value", value)])
            }
        }
    }

    public static func diff(from: JSONValue, to: JSONValue) -> [Operation] {
        var operations: [Operation] = []
        diff(from, to, path: "", into: &operations)
        return operations
    }

    /// A reference token escaped per RFC 6901: `~` as `~0`, `/` as `~1`.
    static func escape(_ token: String) -> String {
        guard token.contains("~") || token.contains("/") else { return token }
        return token.replacing("~", with: "~0").replacing("/", with: "~1")
    }

    private static func diff(_ a: JSONValue, _ b: JSONValue, path: String, into operations: inout [Operation]) {
        switch (a, b) {
        case let (.object(x), .object(y)):
            var target: [String: JSONValue] = [:]
            for (name, value) in y { target[name] = value }
            var source: Set<String> = []
            for (name, value) in x {
                source.insert(name)
                let memberPath = path + "/" + escape(name)
                if let other = target[name] {
                    diff(value, other, path: memberPath, into: &operations)
                } else {
                    operations.append(.remove(path: memberPath))
                }
            }
            for (name, value) in y where !source.contains(name) {
                operations.append(.add(path: path + "/" + escape(name), value: value))
            }
        case let (.array(x), .array(y)):
            let common = min(x.count, y.count)
            for i in 0..<common {
                diff(x[i], y[i], path: path + "/" + String(i), into: &operations)
            }
            if y.count > x.count {
                for i in x.count..<y.count { operations.append(.add(path: path + "/" + String(i), value: y[i])) }
            } else if x.count > y.count {
                for i in (y.count..<x.count).reversed() { operations.append(.remove(path: path + "/" + String(i))) }
            }
        case let (.number(x), .number(y)):
            if x != y && !numbersEqual(x, y) { operations.append(.replace(path: path, value: b)) }
        case (.null, .null):
            break
        case let (.bool(x), .bool(y)):
            if x != y { operations.append(.replace(path: path, value: b)) }
        case let (.string(x), .string(y)):
            if x != y { operations.append(.replace(path: path, value: b)) }
        default:
            operations.append(.replace(path: path, value: b))
        }
    }

    /// Whether two number literals denote the same value (`1.0` and `1`, `1e2` and `100`).
    static func numbersEqual(_ x: String, _ y: String) -> Bool {
        guard let a = canonicalNumber(x), let b = canonicalNumber(y) else { return false }
        return a == b
    }

    /// A JSON number literal as (sign, significant digits, exponent), exact: nil if the
    /// exponent does not fit an Int.
    static func canonicalNumber(_ literal: String) -> String? {
        var chars = Substring(literal)
        var negative = false
        if chars.first == "-" { negative = true; chars = chars.dropFirst() }
        var digits = ""
        var exponent = 0
        var seenPoint = false
        while let c = chars.first, c.isASCII, c.isNumber || c == "." {
            if c == "." {
                seenPoint = true
            } else {
                digits.append(c)
                if seenPoint { exponent -= 1 }
            }
            chars = chars.dropFirst()
        }
        if let e = chars.first, e == "e" || e == "E" {
            guard let value = Int(chars.dropFirst().drop(while: { $0 == "+" })) else { return nil }
            let (sum, overflow) = exponent.addingReportingOverflow(value)
            guard !overflow else { return nil }
            exponent = sum
        } else if !chars.isEmpty {
            return nil
        }
        let significant = digits.drop(while: { $0 == "0" })
        if significant.isEmpty { return "0" }
        var trimmed = Substring(significant)
        while trimmed.last == "0" {
            trimmed = trimmed.dropLast()
            let (next, overflow) = exponent.addingReportingOverflow(1)
            guard !overflow else { return nil }
            exponent = next
        }
        return (negative ? "-" : "") + trimmed + "e" + String(exponent)
    }
}
