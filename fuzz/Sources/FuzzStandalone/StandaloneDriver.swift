// A fallback for toolchains without libFuzzer (-sanitize=fuzzer rejected): replays the seed
// corpus, then feeds seeded random mutations of it to the harness until time runs out. No
// coverage guidance, so it finds far less than libFuzzer; fuzz/run.sh says which one ran.
//
//   <Harness> --seconds N --seed S <corpus dir>...

import Foundation

public enum StandaloneDriver {
    public static func run(_ fuzz: (UnsafePointer<UInt8>, Int) -> CInt) {
        var seconds = 60.0
        var seed: UInt64 = 1
        var dirs: [String] = []
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let a = args.next() {
            switch a {
            case "--seconds": seconds = Double(args.next() ?? "") ?? seconds
            case "--seed": seed = UInt64(args.next() ?? "") ?? seed
            default: dirs.append(a)
            }
        }
        var isDir: ObjCBool = false
        if !dirs.isEmpty, dirs.allSatisfy({ FileManager.default.fileExists(atPath: $0, isDirectory: &isDir) && !isDir.boolValue }) {
            // single inputs (e.g. a crash reproducer): run each once, like libFuzzer given files
            for path in dirs {
                let input = [UInt8](FileManager.default.contents(atPath: path) ?? Data())
                input.withUnsafeBufferPointer { p in
                    if p.count == 0 { var z: UInt8 = 0; _ = fuzz(&z, 0) } else { _ = fuzz(p.baseAddress!, p.count) }
                }
            }
            print("standalone: ran \(dirs.count) input(s)")
            return
        }
        var corpus: [[UInt8]] = []
        for dir in dirs {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir))?.sorted() ?? [] {
                if let d = FileManager.default.contents(atPath: dir + "/" + name) { corpus.append([UInt8](d)) }
            }
        }
        if corpus.isEmpty { corpus = [[0]] }
        var rng = SplitMix64(seed: seed)
        var executions = 0
        func feed(_ input: [UInt8]) {
            input.withUnsafeBufferPointer { p in
                // a non-null pointer even for empty input, as libFuzzer passes
                if p.count == 0 { var z: UInt8 = 0; _ = fuzz(&z, 0) } else { _ = fuzz(p.baseAddress!, p.count) }
            }
            executions += 1
        }
        for input in corpus { feed(input) }
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            for _ in 0..<256 {
                var input = corpus[Int(rng.next() % UInt64(corpus.count))]
                for _ in 0..<(1 + Int(rng.next() % 8)) { mutate(&input, &rng, corpus) }
                feed(input)
            }
        }
        print("standalone: executions: \(executions) (corpus \(corpus.count), seed \(seed), \(Int(seconds)) s)")
    }

    static func mutate(_ b: inout [UInt8], _ rng: inout SplitMix64, _ corpus: [[UInt8]]) {
        let r = rng.next()
        let at = b.isEmpty ? 0 : Int(rng.next() % UInt64(b.count))
        switch r % 7 {
        case 0 where !b.isEmpty: b[at] = UInt8(truncatingIfNeeded: rng.next())
        case 1 where !b.isEmpty: b[at] ^= 1 << UInt8(rng.next() % 8)
        case 2 where !b.isEmpty: b.removeSubrange(at..<min(b.count, at + 1 + Int(rng.next() % 16)))
        case 3: b.insert(contentsOf: (0..<(1 + Int(rng.next() % 16))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: at)
        case 4:
            b.insert(
                contentsOf: [[0x22], [0x5C], [0x7B], [0x5B], [0x3D], [0x00], [0xFF], [0x5C, 0x75, 0x44, 0x38, 0x30, 0x30]][Int(rng.next() % 8)],
                at: at
            )
        case 5:
            let other = corpus[Int(rng.next() % UInt64(corpus.count))]
            if !other.isEmpty {
                let s = Int(rng.next() % UInt64(other.count))
                b.insert(contentsOf: other[s..<min(other.count, s + 1 + Int(rng.next() % 64))], at: at)
            }
        default: if !b.isEmpty { b.removeLast(Int(rng.next() % UInt64(min(b.count, 8)))) }
        }
    }
}

public struct SplitMix64 {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
