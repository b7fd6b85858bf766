import Foundation
import SecureConfJSON
import SecureConfStore
import Testing

@testable import SecureConfCore

/// What a stream hands its HTTP writer, reduced to what a subscriber sees.
enum Seen: Equatable, CustomStringConvertible {
    case event(id: String?, kind: ChangeKind, key: String, value: String?)
    case idle, keyExpired
    case closed(EventStreamEnd)

    var description: String {
        switch self {
        case let .event(id, kind, key, value): "\(kind.rawValue)(\(key), \(value ?? "null"), \(id ?? "no id"))"
        case .idle: "idle"
        case .keyExpired: "key expired"
        case .closed(let end): "closed(\(end))"
        }
    }
}

func seen(_ step: EventStreamStep) -> Seen {
    switch step {
    case let .change(id, change, payload):
        let value = payload["value"].map { String(decoding: JSONWriter.encode($0), as: UTF8.self) }
        return .event(id: id, kind: change.kind, key: change.revision.key, value: value)
    case .idle: return .idle
    case .keyExpired: return .keyExpired
    case .closed(let end): return .closed(end)
    }
}

/// The next `count` steps, or fewer when the stream goes idle or ends first.
func take(_ sub: EventSubscription, _ count: Int, timeout: Duration = .milliseconds(300)) async -> [Seen] {
    var out: [Seen] = []
    while out.count < count {
        let step = seen(await sub.next(timeout: timeout))
        if step == .idle { break }
        out.append(step)
        if case .closed = step { break }
    }
    return out
}

@Suite struct ChangeEventTests {
    let right = "the-right-user-key"
    let other = "another-users-key1"

    func address(_ key: String, _ environment: String = "prod") -> EntryAddress { EntryAddress(environment: environment, key: key) }

    @Test func subscribersReceiveEachChangeOnceInOrderWithValuesOnlyForTheirKey() async throws {
        let f = try Fixture()
        defer { Task { await f.close() } }
        let key = try await f.gate.derivedKey(for: right, client: "t")
        let mine = try await f.events.subscribe(filter: EventFilter(environment: "prod"), key: key, lastEventID: nil)
        let anyone = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil)
        #expect(mine.startID == "n:1.0" && !mine.resumes)
        _ = try await f.service.create(f.caller(right), address("db"), category: "database", value: .string("v1"))
        _ = try await f.service.create(f.caller(right), address("db", "staging"), category: nil, value: .string("other env"))
        _ = try await f.service.update(f.caller(right), address("db"), category: "database", value: .object([("host", .string("h"))]))
        try await f.service.delete(f.caller(right), address("db"))
        try await f.events.pump()
        #expect(
            await take(mine, 10) == [
                .event(id: "n:1.1", kind: .created, key: "db", value: "\"v1\""),
                .event(id: "n:1.3", kind: .updated, key: "db", value: "{\"host\":\"h\"}"),
                .event(id: "n:1.4", kind: .deleted, key: "db", value: nil),
            ]
        )
        let all = await take(anyone, 10)
        #expect(all.count == 4, "\(all)")
        #expect(all.allSatisfy { if case .event(_, _, _, nil) = $0 { true } else { false } }, "no value without the user key: \(all)")
        // Nothing more, and nothing twice, after another pump.
        try await f.events.pump()
        #expect(await take(mine, 1, timeout: .milliseconds(100)).isEmpty)
    }

    @Test func aStreamThatResumesReceivesExactlyWhatItMissedThenLiveChanges() async throws {
        let f = try Fixture()
        defer { Task { await f.close() } }
        let first = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil)
        for i in 1...3 { _ = try await f.service.create(f.caller(right), address("k\(i)"), category: nil, value: .number("\(i)")) }
        try await f.events.pump()
        let got = await take(first, 2)
        guard case .event(let lastID, _, _, _) = got.last else { Issue.record("no events: \(got)"); return }
        f.events.unsubscribe(first, clientLeft: true)
        // Missed: k3 (queued, never read) and k4, k5 written while away.
        for i in 4...5 { _ = try await f.service.create(f.caller(right), address("k\(i)"), category: nil, value: .number("\(i)")) }
        try await f.events.pump()
        let key = try await f.gate.derivedKey(for: right, client: "t")
        let again = try await f.events.subscribe(filter: EventFilter(), key: key, lastEventID: lastID)
        #expect(again.resumes && again.reset == nil)
        _ = try await f.service.create(f.caller(right), address("k6"), category: nil, value: .number("6"))
        try await f.events.pump()
        #expect(
            await take(again, 10) == [
                .event(id: "n:1.3", kind: .created, key: "k3", value: "3"),
                .event(id: "n:1.4", kind: .created, key: "k4", value: "4"),
                .event(id: "n:1.5", kind: .created, key: "k5", value: "5"),
                .event(id: "n:1.6", kind: .created, key: "k6", value: "6"),
            ]
        )
    }

    @Test func anIDThisNodeCannotResumeFromGetsAReset() async throws {
        let f = try Fixture(maxVersions: 1)
        defer { Task { await f.close() } }
        _ = try await f.service.create(f.caller(right), address("db"), category: nil, value: .number("1"))
        _ = try await f.service.update(f.caller(right), address("db"), category: nil, value: .number("2"))
        _ = try await f.service.update(f.caller(right), address("db"), category: nil, value: .number("3"))
        try await f.events.pump()
        for (id, reset) in [
            ("other:1.2", EventReset.otherNode), ("n:1.99", .unknownEventID), ("garbage", .unknownEventID), ("n:1.-1", .unknownEventID),
            ("n:1.99999999999999999999", .unknownEventID), ("n:1.1", .historyPruned),
        ] {
            let sub = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: id)
            #expect(sub.reset == reset && !sub.resumes && sub.startID == "n:1.3", "\(id)")
            #expect(await take(sub, 1, timeout: .milliseconds(50)).isEmpty, "a reset stream starts from the present")
        }
        let current = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: "n:1.2")
        #expect(current.reset == nil, "the newest revision was kept: nothing after n:1.2 was pruned")
    }

    @Test func aResumeFromBeforeACollectionGetsAResetAndReadsSayCollected() async throws {
        let f = try Fixture()
        defer { Task { await f.close() } }
        _ = try await f.service.create(f.caller(right), address("gone"), category: nil, value: .number("1"))
        try await f.service.delete(f.caller(right), address("gone"))
        _ = try await f.service.create(f.caller(right), address("kept"), category: nil, value: .number("2"))
        try await f.events.pump()
        let tombstones = try await f.store.collectableTombstones(deletedBeforeMicros: .max, origin: nil, limit: 10)
        #expect(try await f.store.collect(tombstones.map(\.marker)).keys == 1)
        let sub = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: "n:1.1")
        #expect(sub.reset == .historyPruned && !sub.resumes, "the delete after n:1.1 is no longer in history")
        let after = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: "n:1.2")
        #expect(after.reset == nil && after.resumes, "nothing after n:1.2 left history")
        do {
            _ = try await f.service.versions(f.caller(right), address("gone"))
            Issue.record("the versions of a collected key were listed")
        } catch {
            let e = try #require(ServiceError.domain(error))
            #expect(e.kind == .collected && e.detail.contains("history collected (OSC_TOMBSTONE_HORIZON)"), "\(e)")
        }
    }

    @Test func aSlowSubscriberIsDroppedWithTheIDToResumeFromAndLosesNothing() async throws {
        var settings = ChangeEventHub.Settings()
        settings.queueLimit = 3
        let f = try Fixture(events: settings)
        defer { Task { await f.close() } }
        let slow = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil)
        for i in 1...5 { _ = try await f.service.create(f.caller(right), address("k\(i)"), category: nil, value: .number("\(i)")) }
        try await f.events.pump()
        let got = await take(slow, 10)
        #expect(got.count == 4 && got.last == .closed(.slowConsumer(lastEventID: "n:1.3")), "\(got)")
        f.events.unsubscribe(slow, clientLeft: false)
        let resumed = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: "n:1.3")
        #expect(await take(resumed, 10).map(\.description) == ["created(k4, null, n:1.4)", "created(k5, null, n:1.5)"])
    }

    @Test func subscribersAndTicketsAreBounded() async throws {
        var settings = ChangeEventHub.Settings()
        settings.maxSubscribers = 1
        settings.ticketLifetime = .milliseconds(200)
        let f = try Fixture(events: settings)
        defer { Task { await f.close() } }
        let one = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil)
        await #expect { _ = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil) } throws: {
            kind(of: $0) == .subscribersFull
        }
        f.events.unsubscribe(one, clientLeft: true)
        _ = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil)

        let key = try await f.gate.derivedKey(for: right, client: "t")
        let ticket = try f.events.issueTicket(key: key, client: "10.0.0.1")
        #expect(throws: ServiceError.self) { _ = try f.events.redeem(ticket: ticket, client: "10.0.0.2") }
        #expect(f.events.isValid(ticket: ticket, client: "10.0.0.1"), "another address neither opens nor spends it")
        #expect(!f.events.isValid(ticket: ticket, client: "10.0.0.2"))
        #expect(try f.events.redeem(ticket: ticket, client: "10.0.0.1").key?.index == key.index)
        #expect(throws: ServiceError.self, "single use") { _ = try f.events.redeem(ticket: ticket, client: "10.0.0.1") }
        #expect(!f.events.isValid(ticket: ticket, client: "10.0.0.1"))
        let late = try f.events.issueTicket(key: nil, client: "10.0.0.1")
        try await Task.sleep(for: .milliseconds(300))
        #expect(throws: ServiceError.self, "expired") { _ = try f.events.redeem(ticket: late, client: "10.0.0.1") }
    }

    @Test func theDerivedKeyIsDroppedAfterTheKeyCacheLifetime() async throws {
        var settings = ChangeEventHub.Settings()
        settings.keyLifetime = .seconds(3)
        let f = try Fixture(events: settings)
        defer { Task { await f.close() } }
        let key = try await f.gate.derivedKey(for: right, client: "t")
        let sub = try await f.events.subscribe(filter: EventFilter(), key: key, lastEventID: nil)
        // Taken after the subscription returns: its key's lifetime started before this, so the
        // sleep below always outlasts it (taken before, a slow subscribe on a busy machine
        // left the key alive at 3.2 s).
        let subscribed = ContinuousClock.now
        _ = try await f.service.create(f.caller(right), address("a"), category: nil, value: .number("1"))
        try await f.events.pump()
        #expect(await take(sub, 1) == [.event(id: "n:1.1", kind: .created, key: "a", value: "1")])
        try await Task.sleep(until: subscribed.advanced(by: .milliseconds(3200)))
        _ = try await f.service.create(f.caller(right), address("b"), category: nil, value: .number("2"))
        try await f.events.pump()
        // Two are expected, so a longer wait costs nothing when they come (the whole suite in
        // parallel once kept the second past the default 300 ms).
        #expect(await take(sub, 2, timeout: .seconds(3)) == [.keyExpired, .event(id: "n:1.2", kind: .created, key: "b", value: nil)])
    }

    @Test func shutdownClosesEveryStreamAtOnceAndRefusesNewOnes() async throws {
        let f = try Fixture()
        defer { Task { await f.close() } }
        let sub = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil)
        let clock = ContinuousClock()
        let started = clock.now
        let step = Task { await sub.next(timeout: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(50))
        f.events.shutdown()
        #expect(seen(await step.value) == .closed(.shutdown))
        #expect(clock.now - started < .seconds(2), "the waiting stream ends at once, not at its keep-alive")
        await #expect(throws: ServiceError.self) { _ = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil) }
    }

    @Test func aSubscriptionWhoseResponseNeverStartedIsReaped() async throws {
        let f = try Fixture()
        defer { Task { await f.close() } }
        let attached = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil)
        attached.attach()
        _ = try await f.events.subscribe(filter: EventFilter(), key: nil, lastEventID: nil)
        f.events.reapUnattached(now: .now.advanced(by: .seconds(11)))
        #expect(f.events.health().active == 1)
    }
}
