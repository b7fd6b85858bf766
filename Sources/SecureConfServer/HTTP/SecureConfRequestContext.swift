import Hummingbird
import NIOCore

/// The request context: Hummingbird's core storage plus the client's address, used for
/// per-client limits and (later) the audit trail.
public struct SecureConfRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    /// The client's IP address ("unknown" when the transport has none).
    public var clientIP: String { remoteAddress?.ipAddress ?? "unknown" }
}
