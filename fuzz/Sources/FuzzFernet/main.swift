// libFuzzer harness for Fernet token handling (SecureConfCrypto).
//
// The first input byte picks a mode; the rest is the payload:
//   0 (and anything else): the payload as a token string -> Base64URL.decode and
//      Fernet.decrypt with a fixed key (what a stored or replicated ciphertext goes through).
//   1: the payload as raw token bytes (version, timestamp, IV, ciphertext) sealed with a
//      *valid* HMAC computed here, so AES-CBC decryption and the PKCS#7 padding check run
//      on arbitrary ciphertext; a token that decrypts must re-encrypt to the same bytes.
//   2: the payload as plaintext: encrypt, decrypt, compare; check the TTL rules.
// Any crash, or a broken invariant (precondition), is a finding.
//
// Built with -parse-as-library: this file defines no top-level code.

import Foundation
import SecureConfCrypto

let fernetKeyString = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="
let fixedKey: DerivedKey = DerivedKey(fernetKey: fernetKeyString)!
let signingKey: [UInt8] = Array(Base64URL.decode(fernetKeyString)![0..<16])
let fixedNow = Date(timeIntervalSince1970: 1_700_000_000)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    selfCheckOnce()
    guard size > 0 else { return 0 }
    let mode = data[0]
    let payload = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch mode % 3 {
    case 1: forgedToken(payload)
    case 2: roundTrip(payload)
    default: tokenString(payload)
    }
    return 0
}

/// Untrusted token text.
func tokenString(_ payload: [UInt8]) {
    let token = String(decoding: payload, as: UTF8.self)
    if let bytes = Base64URL.decode(token) {
        // what decodes must survive an encode/decode round trip
        let again = Base64URL.decode(Base64URL.encode(bytes))
        precondition(again == bytes, "Base64URL encode/decode round trip changed \(bytes.count) bytes")
    }
    _ = Fernet.timestamp(of: token)
    do {
        let plain = try Fernet.decrypt(token, key: fixedKey)
        // only a correctly signed token decrypts (the corpus holds some; mutations that keep
        // the decoded bytes, e.g. dropped padding, may too)
        precondition(Base64URL.decode(token) != nil, "decrypt accepted a token that does not decode")
        _ = try? Fernet.decrypt(token, key: fixedKey, ttl: 60, now: fixedNow)
        _ = plain
    } catch {
        // every failure is a typed FernetError: nothing else to check
    }
}

/// Token bytes with a valid signature: exercises AES-CBC and the padding check.
func forgedToken(_ payload: [UInt8]) {
    var body = payload
    if let first = body.first, first & 1 == 0 {
        // mostly keep the token well-formed up to the MAC so decryption is reached
        if body.isEmpty { body = [0x80] } else { body[0] = 0x80 }
        let minimum = 1 + 8 + 16 + 16
        if body.count < minimum { body += [UInt8](repeating: 0, count: minimum - body.count) }
        let excess = (body.count - 25) % 16
        if excess != 0 { body.removeLast(excess) }
    }
    let token = Base64URL.encode(body + hmacSHA256(key: signingKey, message: body))
    let result: Result<[UInt8], FernetError>
    do throws(FernetError) {
        result = .success(try Fernet.decrypt(token, key: fixedKey))
    } catch {
        result = .failure(error)
    }
    // The age checks on a signed token, timestamps anywhere in 64 bits (a trap on `stamp + ttl`
    // was found here and fixed; corpus/fernet/regression-ttl-overflow keeps it covered).
    if body.count >= 41, body[0] == 0x80, (body.count - 25) % 16 == 0 {
        let ttl = Int64(payload.last ?? 0) * 1000
        let stamp = Int64(bitPattern: body[1...8].reduce(UInt64(0)) { ($0 << 8) | UInt64($1) })
        let current = Int64(fixedNow.timeIntervalSince1970)
        let (expiry, overflow) = stamp.addingReportingOverflow(ttl)  // ttl >= 0: overflow means "far future"
        let expired = !overflow && expiry < current
        let future = current + 60 < stamp
        let aged: Result<[UInt8], FernetError>
        do throws(FernetError) {
            aged = .success(try Fernet.decrypt(token, key: fixedKey, ttl: ttl, now: fixedNow))
        } catch {
            aged = .failure(error)
        }
        if expired {
            precondition(aged == .failure(.expired), "stamp \(stamp) + ttl \(ttl) < now, but \(aged)")
        } else if future {
            precondition(aged == .failure(.fromTheFuture), "stamp \(stamp) is more than 60 s ahead, but \(aged)")
        } else {
            precondition(aged == result, "within its ttl the token must decrypt as without one: \(aged) vs \(result)")
        }
    }
    switch result {
    case .success(let plain):
        // a token that decrypts must be exactly what encrypt produces for that plaintext, IV and time
        let stamp = body[1...8].reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
        guard stamp <= UInt64(Int64.max / 2) else { return }  // Date cannot represent it exactly
        let iv = Array(body[9..<25])
        let again = Fernet.encrypt(plain, key: fixedKey, now: Date(timeIntervalSince1970: TimeInterval(stamp)), iv: iv)
        if TimeInterval(stamp) < 9_007_199_254_740_992 {  // exact in a Double
            precondition(
                Base64URL.decode(again) == body + hmacSHA256(key: signingKey, message: body),
                "re-encrypting a decrypted token gave different bytes (\(plain.count) bytes of plaintext)"
            )
        }
    case .failure(let error):
        precondition(
            error == .badPadding || error == .malformed,
            "a correctly signed token failed with \(error)"
        )
        if body.count >= 41, body[0] == 0x80, (body.count - 25) % 16 == 0 {
            precondition(error == .badPadding, "a well-formed, signed token was called malformed")
        }
    }
}

/// Plaintext round trip and TTL semantics.
func roundTrip(_ payload: [UInt8]) {
    var iv = [UInt8](repeating: 0, count: 16)
    for (i, b) in payload.prefix(16).enumerated() { iv[i] = b }
    let plain = Array(payload.dropFirst(min(16, payload.count)))
    let token = Fernet.encrypt(plain, key: fixedKey, now: fixedNow, iv: iv)
    guard let decrypted = try? Fernet.decrypt(token, key: fixedKey) else {
        preconditionFailure("a freshly encrypted token does not decrypt (\(plain.count) bytes)")
    }
    precondition(decrypted == plain, "round trip changed the plaintext")
    precondition(Fernet.timestamp(of: token) == 1_700_000_000, "wrong embedded timestamp")
    let ttl = Int64(payload.first ?? 0)
    let later = fixedNow.addingTimeInterval(TimeInterval(ttl + 1))
    do throws(FernetError) {
        _ = try Fernet.decrypt(token, key: fixedKey, ttl: ttl, now: later)
        preconditionFailure("token older than its ttl was accepted")
    } catch {
        precondition(error == .expired, "expired token failed with \(error)")
    }
    precondition((try? Fernet.decrypt(token, key: fixedKey, ttl: ttl, now: fixedNow)) == plain)
    do throws(FernetError) {
        _ = try Fernet.decrypt(token, key: fixedKey, ttl: 10, now: fixedNow.addingTimeInterval(-61))
        preconditionFailure("token from the future was accepted")
    } catch {
        precondition(error == .fromTheFuture, "future token failed with \(error)")
    }
    // flipping any one byte of the token must make it fail
    var bytes = Base64URL.decode(token)!
    let at = Int(payload.last ?? 0) % bytes.count
    bytes[at] ^= 0x01
    precondition(
        (try? Fernet.decrypt(Base64URL.encode(bytes), key: fixedKey)) == nil,
        "a token with byte \(at) flipped still decrypts"
    )
}

// MARK: - the forging helper's own check

nonisolated(unsafe) var selfChecked = false

/// Once: the HMAC here must match the one Fernet.encrypt uses, or mode 1 tests nothing.
func selfCheckOnce() {
    if selfChecked { return }
    selfChecked = true
    precondition(sha256(Array("abc".utf8)) == hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
    precondition(sha256([]) == hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
    precondition(sha256(Array(String(repeating: "a", count: 1000).utf8)) == hex("41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"))
    let token = Base64URL.decode(Fernet.encrypt(Array("self-check".utf8), key: fixedKey, now: fixedNow))!
    let mac = hmacSHA256(key: signingKey, message: Array(token.dropLast(32)))
    precondition(mac == Array(token.suffix(32)), "the harness's HMAC-SHA256 disagrees with Fernet's")
}

func hex(_ s: String) -> [UInt8] {
    var out = [UInt8]()
    var it = s.utf8.makeIterator()
    while let a = it.next(), let b = it.next() {
        out.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16)!)
    }
    return out
}

// MARK: - SHA-256 / HMAC (FIPS 180-4, RFC 2104), only to sign forged tokens

let k256: [UInt32] = [
    0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
    0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
    0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
    0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
    0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
    0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
    0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
    0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
]

func sha256(_ message: [UInt8]) -> [UInt8] {
    var h: [UInt32] = [0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19]
    var m = message
    let bitLength = UInt64(message.count) &* 8
    m.append(0x80)
    while m.count % 64 != 56 { m.append(0) }
    for shift in stride(from: 56, through: 0, by: -8) { m.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
    var w = [UInt32](repeating: 0, count: 64)
    func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
    for chunk in stride(from: 0, to: m.count, by: 64) {
        for i in 0..<16 {
            let j = chunk + 4 * i
            w[i] = UInt32(m[j]) << 24 | UInt32(m[j + 1]) << 16 | UInt32(m[j + 2]) << 8 | UInt32(m[j + 3])
        }
        for i in 16..<64 {
            let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
        }
        var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
        for i in 0..<64 {
            let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = hh &+ s1 &+ ch &+ k256[i] &+ w[i]
            let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ maj
            (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
        }
        h[0] = h[0] &+ a; h[1] = h[1] &+ b; h[2] = h[2] &+ c; h[3] = h[3] &+ d
        h[4] = h[4] &+ e; h[5] = h[5] &+ f; h[6] = h[6] &+ g; h[7] = h[7] &+ hh
    }
    return h.flatMap { v in [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: v >> UInt32($0)) } }
}

func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
    var k = key.count > 64 ? sha256(key) : key
    k += [UInt8](repeating: 0, count: 64 - k.count)
    let inner = sha256(k.map { $0 ^ 0x36 } + message)
    return sha256(k.map { $0 ^ 0x5c } + inner)
}

#if FUZZ_STANDALONE
import FuzzStandalone

@main
enum StandaloneMain {
    static func main() { StandaloneDriver.run(fuzz) }
}
#endif
