import Testing

@testable import SecureConfPostgres

/// `OSC_DATABASE_URL` as a user writes it, and what a node says about a wrong one: never any
/// part of the password.
@Suite struct PostgresSettingsTests {
    func parse(_ url: String, hosts: String? = nil) -> Result<PostgresSettings, PostgresSettings.Problem> {
        PostgresSettings.parse(url: url, hosts: hosts)
    }

    @Test func aFullURLGivesEveryPart() throws {
        let s = try parse("postgresql://app:p%40ss%2Fw%3Ford@db1:6432,[::1]:5433/osc?sslmode=verify-full&sslrootcert=/run/ca@2.pem&pool_max=8").get()
        #expect(s.user == "app" && s.password == "p@ss/w?ord" && s.database == "osc")
        #expect(s.hosts == [.init(name: "db1", port: 6432), .init(name: "::1", port: 5433)])
        #expect(s.sslMode == .verifyFull && s.sslRootCert == "/run/ca@2.pem" && s.maxConnections == 8)
        #expect(s.description == "postgres://app@db1:6432,[::1]:5433/osc?sslmode=verify-full", "no password in what is logged")
        let plain = try parse("postgres://osc@localhost").get()
        #expect(plain.hosts == [.init(name: "localhost", port: 5432)] && plain.database == "osc" && plain.sslMode == .prefer && plain.password == nil)
    }

    @Test func errorsNeverShowThePassword() {
        let secret = "S3cret-pw"
        let urls = [
            "postgres://app:\(secret)/db",  // no '@': the password sits where the host goes
            "postgres://app:\(secret)?x@db/osc",  // an unescaped '?' in the password
            "postgres://app:\(secret)@db:notaport/osc",
            "postgres://app:\(secret)@db/osc?sslmode=\(secret)",
            "mysql://app:\(secret)@db/osc",
            "postgres://app:\(secret)@db/osc?\(secret)=1",
        ]
        for url in urls {
            guard case let .failure(problem) = parse(url) else {
                Issue.record("accepted: \(url)")
                continue
            }
            #expect(!problem.description.contains(secret), "\(problem)")
            #expect(problem.variable == "OSC_DATABASE_URL")
        }
    }

    @Test func theHostListReplacesTheURLsHostsWhichAreThenNotParsed() throws {
        let s = try parse("postgres://app:pw@ignored:notaport/osc", hosts: "db1:5432, db2").get()
        #expect(s.hosts.map(\.description) == ["db1:5432", "db2:5432"])
        guard case let .failure(problem) = parse("postgres://app:pw@db/osc", hosts: "db1:99999") else {
            Issue.record("accepted a port out of range")
            return
        }
        #expect(problem.variable == "OSC_DATABASE_HOSTS" && problem.description.contains("db1:99999"))
    }
}
