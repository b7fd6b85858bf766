import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SecureConfCore
import Testing

@testable import SecureConfServer

/// `OSC_AUTH_MODE=tokens` in-process: the bearer header's forms, the break-glass API key,
/// login by JSON and by form, and a refusal naming the capability.
@Suite struct TokenModeTests {
    @Test func theBearerHeaderIsReadInEveryCaseAndNothingElseIsABearer() {
        typealias M = TokenMiddleware<SecureConfRequestContext>
        #expect(M.bearerToken("Bearer sct_x") == "sct_x")
        #expect(M.bearerToken("bearer   sct_x \t") == "sct_x")
        #expect(M.bearerToken("BEARER sct_x") == "sct_x")
        for bad in ["Basic abc", "Bearer", "Bearer ", "Bearersct_x", "Token sct_x", ""] {
            #expect(M.bearerToken(bad) == nil, "\(bad)")
        }
    }

    @Test func aTokenNodeAnswersTokensOnlyAndTheAPIKeyBreaksGlass() async throws {
        let test = try TestNode {
            $0.authMode = .tokens
            $0.apiKey = "break-glass-key-0123"
        }
        try await test.node.identity.addUser(name: "rita", password: "rita-pass-1", role: .reader, tenant: nil, policies: nil, caller: nil)
        try await test.run { client in
            let none = try await client.send(.get, "/configs")
            #expect(none.status == .unauthorized && none.detail?.contains("Bearer") == true)
            let wrongScheme = try await client.send(.get, "/configs", headers: [.authorization: "Basic cml0YTpyaXRh"])
            #expect(wrongScheme.status == .unauthorized)
            #expect(try await client.send(.get, "/configs", apiKey: "break-glass-key-0123").status == .ok)
            #expect(try await client.send(.get, "/configs", apiKey: "not-the-break-glass").status == .forbidden)

            let wrong = try await client.send(.post, "/auth/login", userKey: nil, body: #"{"username":"rita","password":"nope-nope"}"#)
            #expect(wrong.status == .unauthorized && wrong.detail == "Invalid username or password")
            let login = try await client.send(.post, "/auth/login", userKey: nil, body: #"{"username":"rita","password":"rita-pass-1"}"#)
            let token = try #require(login.object["access_token"] as? String)
            #expect(login.object["token_type"] as? String == "bearer" && login.object["expires_in"] as? Int == 3600)
            let bearer: HTTPFields = [.authorization: "Bearer " + token]
            #expect(try await client.send(.get, "/configs", headers: bearer).status == .ok)
            let write = try await client.send(.post, "/configs", headers: bearer, body: #"{"key":"k","value":1}"#)
            #expect(write.status == .forbidden && write.detail == "user:rita lacks the 'write' capability on environment 'default', key 'k'")
            #expect(try await client.send(.get, "/auth/users", userKey: nil, headers: bearer).status == .forbidden)
            // A bearer token is no peer credential.
            #expect(try await client.send(.get, "/cluster/digest", userKey: nil, headers: bearer).status != .ok)
        }
    }
}
