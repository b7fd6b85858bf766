import Foundation
import Hummingbird
import NIOCore
import SecureConfCore
import SecureConfStore
import Synchronization

/// A request context that knows the client's address and carries the request's audit note.
public protocol AuditedRequestContext: RemoteAddressRequestContext, PeerAuthenticatedContext {
    var audit: AuditNote { get }
    /// Who the request acts as (`tokens` mode), set by `TokenMiddleware`.
    var principal: Principal? { get set }
}

/// The node's request context: Hummingbird's core context, the peer address of the
/// connection (nil when there is none, as in in-process tests) and the audit note.
public struct SecureConfRequestContext: AuditedRequestContext, PeerAuthenticatedContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    public let audit: AuditNote
    public let peer: PeerNote
    public var principal: Principal?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        audit = AuditNote()
        peer = PeerNote()
    }
}

extension RemoteAddressRequestContext {
    /// The client's IP address ("unknown" when the transport has none).
    public var clientIP: String { remoteAddress?.ipAddress ?? "unknown" }
}
