import SecureConfJSON

/// How entries become environment variables (`secureconf run`, `secureconf export`):
///
/// - the name is the prefix followed by the key, upper-cased; every character other than
///   `A`–`Z`, `0`–`9` and `_` becomes `_`, and a name that would start with a digit gets a
///   leading `_` (`db-url` → `DB_URL`, `2fa.secret` → `_2FA_SECRET`);
/// - a string is the value as it is; a number, `true`, `false`, `null` and an array are their
///   JSON text; an object is flattened, one variable per member, named
///   `NAME_MEMBER` by the same rule, recursively (an empty object is `{}`);
/// - two sources that make the same name are an error naming both; so is a NUL character,
///   which no environment can carry.
public enum WorkloadVariables {
    /// Every SecureConf credential a child process must not inherit.
    public static let credentialVariables = [
        "OSC_API_KEY", "SECURECONF_USER_KEY", "OSC_USER_KEY", "SECURECONF_CREDENTIALS_FILE", "OSC_USER_KEY_FILE", "SECURECONF_TOKEN",
        "SECURECONF_TOKEN_FILE", "SECURECONF_PASSWORD",
    ]

    public static func name(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "a"..."z": out.unicodeScalars.append(Unicode.Scalar(scalar.value - 32)!)
            case "A"..."Z", "0"..."9", "_": out.unicodeScalars.append(scalar)
            default: out.append("_")
            }
        }
        if let first = out.unicodeScalars.first, ("0"..."9").contains(first) { out = "_" + out }
        return out
    }

    /// The variables of `entries`, in entry order, members in their stored order.
    public static func flatten(_ entries: [Entry], prefix: String = "") throws(ClientError) -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        var sources: [String: String] = [:]
        func add(_ name: String, _ value: String, _ source: String) throws(ClientError) {
            if let earlier = sources[name] {
                throw ClientError(.unusable, "\(earlier) and \(source) both become the variable \(name); rename one of them")
            }
            guard !value.unicodeScalars.contains("\0") else {
                throw ClientError(.unusable, "\(source) holds a NUL character, which no environment variable can carry")
            }
            sources[name] = source
            out.append((name, value))
        }
        func walk(_ value: JSONValue, _ name: String, _ source: String) throws(ClientError) {
            switch value {
            case .string(let s): try add(name, s, source)
            case .object(let members) where !members.isEmpty:
                for (member, inner) in members { try walk(inner, name + "_" + Self.name(member), source + " member '\(member)'") }
            default: try add(name, String(decoding: JSONWriter.encode(value), as: UTF8.self), source)
            }
        }
        for entry in entries { try walk(entry.value, Self.name(prefix + entry.key), "key '\(entry.key)'") }
        return out
    }
}
