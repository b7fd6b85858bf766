import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SecureConfCore
import SecureConfJSON

/// `/auth/*` (`OSC_AUTH_MODE=tokens`): login and logout, who a token is, users and service
/// tokens. Passwords and token secrets appear in no log, error or audit record; a token's
/// secret is in the one reply that creates it.
struct AuthController<Context: AuditedRequestContext>: Sendable {
    let node: SecureConfNode
    var identity: IdentityService { node.identity }
    static var maxBodyBytes: Int { 64 * 1024 }

    /// A JSON object, or a form (`application/x-www-form-urlencoded`, ConfigSync's habit) as one.
    private func fields(_ request: Request) async throws -> JSONValue {
        let type = request.headers[.contentType]?.lowercased() ?? ""
        if type.hasPrefix("application/x-www-form-urlencoded") {
            let buffer: ByteBuffer
            do {
                buffer = try await request.body.collect(upTo: Self.maxBodyBytes)
            } catch {
                throw ServiceError(.bodyTooLarge, "Request body too large (limit \(Self.maxBodyBytes) bytes)")
            }
            let text = String(decoding: buffer.readableBytesView, as: UTF8.self)
            var members: [(String, JSONValue)] = []
            for pair in text.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let name = RequestInput.percentDecode(parts[0], plusIsSpace: true),
                    let value = RequestInput.percentDecode(parts.count > 1 ? parts[1] : "", plusIsSpace: true)
                else { throw ServiceError.badRequest("Malformed form body") }
                members.append((name, .string(value)))
            }
            return .object(members)
        }
        return try await RequestInput.jsonObject(request, maxBytes: Self.maxBodyBytes)
    }

    private func string(_ body: JSONValue, _ name: String) throws(ServiceError) -> String {
        guard let value = try RequestInput.optionalString(body, name), !value.isEmpty else {
            throw ServiceError.unprocessable("\(name) is required")
        }
        return value
    }

    private func role(_ body: JSONValue, default fallback: Role?) throws(ServiceError) -> Role? {
        guard let raw = try RequestInput.optionalString(body, "role") else { return fallback }
        guard let role = Role(rawValue: raw) else { throw ServiceError.unprocessable("role must be admin, writer or reader") }
        return role
    }

    private func policies(_ body: JSONValue) throws(ServiceError) -> Policy?? {
        guard let raw = body["policies"] else { return .none }
        if raw.isNull { return .some(nil) }
        return .some(try Policy.parse(raw))
    }

    private func caller(_ request: Request, _ context: Context) throws(ServiceError) -> Caller {
        try RequestInput.caller(request, context, node, userKey: .optional)
    }

    private func principal(_ context: Context) throws(ServiceError) -> Principal {
        guard let principal = context.principal else { throw ServiceError(.missingToken, "Authorization: Bearer <token> is required") }
        return principal
    }

    /// `{"access_token", "token_type": "bearer", "expires_in"}`.
    @Sendable func login(_ request: Request, context: Context) async throws -> Response {
        let body = try await fields(request)
        let username = try string(body, "username")
        let password = try string(body, "password")
        try IdentityService.checkName(username, field: "username")
        context.audit.target(key: username)
        let issued = try await identity.login(username: username, password: password, caller: try caller(request, context))
        return JSONResponse.make { w in
            w.raw("{")
            w.member("access_token", first: true); w.string(issued.token)
            w.member("token_type"); w.string("bearer")
            w.member("expires_in"); w.integer(issued.expiresIn)
            w.raw("}")
        }
    }

    /// Revokes the token the request carries.
    @Sendable func logout(_ request: Request, context: Context) async throws -> Response {
        guard let id = try principal(context).tokenID else {
            throw ServiceError.unprocessable("the API key is not a token: nothing to log out of")
        }
        try await identity.revoke(tokenID: id, caller: try caller(request, context))
        return JSONResponse.message("Logged out")
    }

    /// `{"subject", "role", "tenant", "policies", "token_id"}`.
    @Sendable func me(_ request: Request, context: Context) async throws -> Response {
        let p = try principal(context)
        return JSONResponse.make { w in
            w.write(
                .object([
                    ("subject", .string(p.subject)), ("role", .string(p.role.rawValue)), ("tenant", .string(p.tenant)),
                    ("policies", p.policy.json), ("token_id", p.tokenID.map(JSONValue.string) ?? .null),
                ])
            )
        }
    }

    @Sendable func listUsers(_ request: Request, context: Context) async throws -> Response {
        let users = try await identity.users(visibleTo: context.principal)
        return JSONResponse.make { $0.write(.array(users.map(\.json))) }
    }

    @Sendable func addUser(_ request: Request, context: Context) async throws -> Response {
        let body = try await RequestInput.jsonObject(request, maxBytes: Self.maxBodyBytes)
        let name = try string(body, "username")
        context.audit.target(key: name)
        let user = try await identity.addUser(
            name: name,
            password: try string(body, "password"),
            role: try role(body, default: .reader)!,
            tenant: try RequestInput.optionalString(body, "tenant"),
            policies: try policies(body) ?? nil,
            caller: try caller(request, context)
        )
        return JSONResponse.make(.created) { $0.write(user.json) }
    }

    @Sendable func updateUser(_ request: Request, context: Context) async throws -> Response {
        let name = try context.parameters.require("name")
        context.audit.target(key: name)
        let body = try await RequestInput.jsonObject(request, maxBytes: Self.maxBodyBytes)
        for (field, _) in Self.members(body) where !["role", "policies", "password"].contains(field) {
            throw ServiceError.unprocessable("unknown field '\(field.prefix(40))': role, policies and password can be changed")
        }
        let user = try await identity.updateUser(
            name: name,
            role: try role(body, default: nil),
            policies: try policies(body),
            password: try RequestInput.optionalString(body, "password"),
            caller: try caller(request, context)
        )
        return JSONResponse.make { $0.write(user.json) }
    }

    @Sendable func deleteUser(_ request: Request, context: Context) async throws -> Response {
        let name = try context.parameters.require("name")
        context.audit.target(key: name)
        try await identity.deleteUser(name: name, caller: try caller(request, context))
        return JSONResponse.message("User '\(name)' deleted")
    }

    /// `{"token", "id", "name", ...}`: the secret is in this reply only.
    @Sendable func createToken(_ request: Request, context: Context) async throws -> Response {
        let body = try await RequestInput.jsonObject(request, maxBytes: Self.maxBodyBytes)
        let name = try string(body, "name")
        context.audit.target(key: name)
        var expires: Int?
        if let raw = body["expires_in"], !raw.isNull {
            guard case .number(let text) = raw, let n = Int(text) else {
                throw ServiceError.unprocessable("expires_in must be a whole number of seconds")
            }
            expires = n
        }
        let created = try await identity.createServiceToken(
            name: name,
            tenant: try RequestInput.optionalString(body, "tenant"),
            role: try role(body, default: .reader)!,
            policies: try policies(body) ?? nil,
            expiresInSeconds: expires,
            by: try principal(context),
            caller: try caller(request, context)
        )
        var members: [(String, JSONValue)] = [("token", .string(created.token))]
        if case .object(let rest) = created.record.json(lastUsed: nil) { members += rest }
        return JSONResponse.make(.created) { $0.write(.object(members)) }
    }

    @Sendable func listTokens(_ request: Request, context: Context) async throws -> Response {
        let tokens = try await identity.serviceTokens(visibleTo: context.principal)
        return JSONResponse.make { $0.write(.array(tokens.map { $0.json(lastUsed: identity.lastUsed($0.id)) })) }
    }

    @Sendable func revokeToken(_ request: Request, context: Context) async throws -> Response {
        let id = try context.parameters.require("id")
        context.audit.target(key: id)
        try await identity.revoke(tokenID: id, caller: try caller(request, context))
        return JSONResponse.message("Token '\(id)' revoked")
    }

    private static func members(_ value: JSONValue) -> [(String, JSONValue)] {
        if case .object(let m) = value { return m }
        return []
    }
}
