import SecureConfCrypto
import SecureConfStore

/// Change-event streams through the one path: authorization, the caller's key through the
/// limiter, the operation count.
extension ConfigService {
    /// Opens a change-event stream. With `ticket`, the ticket's credentials (it is redeemed
    /// once); otherwise the caller's user key, when it sent one, decrypts the values it is sent.
    public func subscribe(_ caller: Caller, filter: EventFilter, lastEventID: String?, ticket: String?) async throws -> EventSubscription {
        let events = try eventHub()
        return try await perform(.subscribe, caller, environment: filter.environment, key: filter.key) { scope in
            var filter = filter
            (filter.policy, filter.tenant, filter.tokenID) = (caller.principal?.policy, caller.tenant, caller.principal?.tokenID)
            let key: CachedKey?
            if let ticket {
                let redeemed = try events.redeem(ticket: ticket, client: caller.client)
                key = redeemed.key
                (filter.policy, filter.tenant, filter.tokenID) =
                    (redeemed.principal?.policy, redeemed.principal?.tenant ?? Revision.defaultTenant, redeemed.principal?.tokenID)
            } else {
                key = caller.userKey != nil ? try await scope.callerKey() : nil
            }
            return try await events.subscribe(filter: filter, key: key, lastEventID: lastEventID)
        }
    }

    /// A single-use ticket that opens one stream (`?ticket=`) with the caller's credentials.
    public func eventTicket(_ caller: Caller) async throws -> (ticket: String, expiresInSeconds: Int) {
        let events = try eventHub()
        return try await perform(.subscribe, caller, environment: nil, key: nil) { scope in
            let key: CachedKey? = caller.userKey == nil ? nil : try await scope.callerKey()
            let ticket = try events.issueTicket(key: key, principal: caller.principal, client: caller.client)
            return (ticket, Int(events.settings.ticketLifetime.components.seconds))
        }
    }

    private func eventHub() throws(ServiceError) -> ChangeEventHub {
        guard let events else { throw ServiceError(.routeNotFound, "Not Found") }
        return events
    }
}
