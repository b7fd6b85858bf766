"""The history checker catches each violation it is there for (synthetic histories; no nodes)."""

from __future__ import annotations

import json

from history import Client, History, Op, Window, Workload, check


def workload(history: History) -> Workload:
    w = Workload("s", Client([], "", ""), history, nodes=3, writers=1)
    w.register_values["s-r-0"] = {json.dumps("0:0"), json.dumps("0:1"), json.dumps("0:2")}
    return w


def stamp(t: float) -> str:
    return f"2026-12-02T00:00:{t:09.6f}Z"


def op(kind, key, value=None, *, node=0, t=1.0, outcome="ok", status=200, seen=None, process="w0", seen_at=None) -> Op:
    return Op(process, node, kind, key, value, invoked=t, completed=t + 0.1, outcome=outcome, status=status, seen=seen,
              seen_at=seen_at)


def clean() -> tuple[History, list[Op]]:
    h = History()
    ops = [
        op("create", "s-r-0", "0:0", t=0.0, status=201),
        op("create", "s-c-0-1", "c0:1", t=1.0, status=201),
        op("update", "s-r-0", "0:1", node=1, t=2.0),
        op("create", "s-c-0-3", "c0:3", t=3.0, status=201),
        op("delete", "s-c-0-3", node=2, t=4.0),
        op("read", "s-c-0-3", node=2, t=4.5, status=404, seen=None),
        op("read", "s-r-0", node=1, t=5.0, seen=json.dumps("0:1"), process="r0", seen_at=stamp(2.0)),
        op("update", "s-r-0", "0:2", node=0, t=6.0, outcome="unknown", status=503),
    ]
    for o in ops:
        h.record(o)
    return h, ops


def final(**overrides) -> list[dict[str, str]]:
    base = {"s-r-0": json.dumps("0:2"), "s-c-0-1": json.dumps("c0:1")}
    base.update({k: v for k, v in overrides.items() if v is not None})
    for k, v in overrides.items():
        if v is None:
            base.pop(k, None)
    return [dict(base), dict(base), dict(base)]


def test_a_clean_history_passes():
    h, _ = clean()
    assert check(h, workload(h), final()) == []
    # The unknown update may also not have landed: the acknowledged one is then current.
    assert check(h, workload(h), final(**{"s-r-0": json.dumps("0:1")})) == []


def test_a_lost_acknowledged_create_is_caught():
    h, _ = clean()
    states = final()
    del states[1]["s-c-0-1"]
    problems = check(h, workload(h), states)
    assert any("s-c-0-1: acknowledged create by node 0 lost on node 1" in p for p in problems), problems


def test_an_undone_delete_is_caught():
    h, _ = clean()
    problems = check(h, workload(h), final(**{"s-c-0-3": json.dumps("c0:3")}))
    assert any("deleted (acknowledged" in p for p in problems), problems


def test_a_register_older_than_its_acknowledged_value_is_caught():
    h, _ = clean()
    problems = check(h, workload(h), final(**{"s-r-0": json.dumps("0:0")}))
    assert any("older than acknowledged" in p for p in problems), problems


def test_a_read_going_backwards_is_caught():
    h, _ = clean()
    h.record(op("read", "s-r-0", node=1, t=7.0, seen=json.dumps("0:0"), process="r0", seen_at=stamp(0.0)))
    problems = check(h, workload(h), final())
    assert any("went backwards" in p for p in problems), problems


def test_an_unknown_write_landing_late_is_allowed():
    """A paused node answers its queued requests when it resumes: an update whose client gave
    up can land after later acknowledged ones. Its value may then be current and be read
    after newer-numbered values, as long as the node's version order (updated_at) moves on."""
    late, _ = clean()
    w = workload(late)
    w.register_values["s-r-0"].add(json.dumps("0:3"))
    late.record(op("update", "s-r-0", "0:3", node=0, t=7.0, outcome="unknown", status=None))  # lands at 20
    late.record(op("update", "s-r-0", "0:4", node=1, t=10.0))
    w.register_values["s-r-0"].add(json.dumps("0:4"))
    late.record(op("read", "s-r-0", node=1, t=11.0, seen=json.dumps("0:4"), process="r0", seen_at=stamp(10.0)))
    late.record(op("read", "s-r-0", node=1, t=21.0, seen=json.dumps("0:3"), process="r0", seen_at=stamp(20.0)))
    assert check(late, w, final(**{"s-r-0": json.dumps("0:3")})) == []
    # But an acknowledged value that a later acknowledged write followed is not a valid end.
    problems = check(late, w, final(**{"s-r-0": json.dumps("0:1")}))
    assert any("older than acknowledged" in p for p in problems), problems


def test_an_acknowledgement_by_a_cut_off_node_is_caught():
    h, _ = clean()
    h.windows.append(Window("node 1 cut off", start=1.5, end=2.5, isolated=1))
    problems = check(h, workload(h), final())
    assert any("acknowledged a update while cut off" in p for p in problems), problems


def test_nodes_that_differ_and_server_errors_are_caught():
    h, _ = clean()
    h.record(op("update", "s-r-0", "0:9", t=8.0, outcome="unknown", status=500))
    states = final()
    states[2]["s-c-0-1"] = json.dumps("other")
    problems = check(h, workload(h), states)
    assert any("node 2 differs from node 0" in p for p in problems), problems
    assert any("server error 500" in p for p in problems), problems


def test_a_refused_create_that_landed_is_caught():
    h, _ = clean()
    h.record(op("create", "s-c-0-9", "c0:9", t=9.0, outcome="fail", status=400))
    problems = check(h, workload(h), final(**{"s-c-0-9": json.dumps("c0:9")}))
    assert any("create refused" in p for p in problems), problems
