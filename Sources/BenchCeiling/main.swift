// The HTTP ceiling of the benchmark (`bench/bench.py --only peers`): Hummingbird on the same
// event-loop group a node uses, answering every GET with a constant JSON body of a read's
// size. No store, no crypto, no audit: what the HTTP stack alone allows on this machine.
//
//     secureconf-ceiling PORT [BODY_BYTES]
import Foundation
import Hummingbird
import NIOCore
import NIOPosix

let arguments = CommandLine.arguments
guard arguments.count >= 2, let port = Int(arguments[1]), (1...65535).contains(port) else {
    FileHandle.standardError.write(Data("usage: secureconf-ceiling PORT [BODY_BYTES]\n".utf8))
    exit(2)
}
let size = arguments.count >= 3 ? max(16, min(Int(arguments[2]) ?? 180, 1 << 20)) : 180
let prefix = #"{"key":"hot","value":""#
let suffix = #""}"#
let body = prefix + String(repeating: "x", count: max(0, size - prefix.utf8.count - suffix.utf8.count)) + suffix
let buffer = ByteBuffer(string: body)

let router = Router()
router.get("**") { _, _ -> Response in
    Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: buffer))
}
router.get("health") { _, _ -> Response in
    Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"status":"healthy"}"#)))
}
let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, ProcessInfo.processInfo.activeProcessorCount))
let app = Application(
    router: router,
    configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: nil, backlog: 1024),
    eventLoopGroupProvider: .shared(group)
)
try await app.runService()
