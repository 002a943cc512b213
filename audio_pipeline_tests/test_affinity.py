"""The suite's xdist scheduler (affinity.py), driven as xdist's controller drives it, with
stand-in workers that record what they are sent (the real workers run in `make test`)."""

import json
from collections import Counter
from types import SimpleNamespace

import pytest

from . import affinity


class Worker:
    """What the scheduler uses of xdist's WorkerController."""

    def __init__(self, name):
        self.name = name
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[int] = []
        self.ran: list[int] = []

    def send_runtest_some(self, indices):
        assert not self.shutting_down
        self.sent += indices

    def shutdown(self):
        self.shutting_down = True

    def __repr__(self):
        return self.name


def scheduler(
    tmp_path, monkeypatch, groups: dict[str, str], tests: list[str], workers, waits=(), reports=None
):
    path = tmp_path / "affinity.json"
    path.write_text(json.dumps({"groups": groups, "waits": list(waits)}))
    monkeypatch.setenv(affinity.AFFINITY_FILE, str(path))
    reports = [] if reports is None else reports
    config = SimpleNamespace(
        hook=SimpleNamespace(pytest_collectreport=lambda report: reports.append(report))
    )
    sched = affinity.AffinityScheduling(config, print, numnodes=len(workers))
    for w in workers:
        sched.add_node(w)
    for w in workers:
        sched.add_node_collection(w, getattr(w, "collected", tests))
    assert sched.collection_is_completed
    sched.schedule()
    return sched


def run(sched, workers, order):
    """Complete tests, the workers taking turns as ``order`` says (a worker runs a test once
    it holds the next, or is shutting down), until none has anything to run."""
    turns = iter(order * 1000)
    while sched.has_pending:
        w = next(turns)
        queue = sched.node2pending.get(w, [])
        if queue and (len(queue) >= 2 or w.shutting_down):
            w.ran.append(queue[0])
            sched.mark_test_complete(w, queue[0])
    assert sched.tests_finished


TESTS = [f"t{i}" for i in range(12)]
GROUPS = {"t1": "multinode_ray", "t2": "ray_compute", "t4": "multinode_ray", "t5": "ray_compute",
          "t8": "multinode_ray", "t9": "ray_compute", "t11": "multinode_ray"}  # fmt: skip


def test_each_fixture_goes_to_one_worker_and_every_test_runs_once(tmp_path, monkeypatch):
    a, b = Worker("a"), Worker("b")
    sched = scheduler(tmp_path, monkeypatch, GROUPS, TESTS, [a, b])
    # one at a time: each worker holds the test it runs and the next
    assert (a.sent, b.sent) == ([0, 1], [2, 3])
    run(sched, [a, b], [a, b, b])
    assert Counter(a.ran + b.ran) == Counter(range(12)) and a.sent == a.ran and b.sent == b.ran
    by_group = {g: {w for w in (a, b) for i in w.ran if GROUPS.get(TESTS[i]) == g} for g in
                ("multinode_ray", "ray_compute")}  # fmt: skip
    assert by_group == {"multinode_ray": {a}, "ray_compute": {b}}
    assert a.shutting_down and b.shutting_down


def test_one_worker_runs_everything(tmp_path, monkeypatch):
    a = Worker("a")
    sched = scheduler(tmp_path, monkeypatch, GROUPS, TESTS, [a])
    run(sched, [a], [a])
    assert a.ran == list(range(12))  # in collection order, both fixtures on the one worker


def test_a_crashed_worker_s_tests_go_to_the_other(tmp_path, monkeypatch):
    a, b = Worker("a"), Worker("b")
    sched = scheduler(tmp_path, monkeypatch, GROUPS, TESTS, [a, b])
    assert sched.remove_node(a) == "t0"  # the test it was running, reported as the crash
    run(sched, [b], [b])
    assert sorted(b.ran) == list(range(1, 12))  # t1 and the cluster's tests: b starts it


@pytest.mark.parametrize("left, taken", [(3, True), (2, False)])
def test_a_worker_with_nothing_of_its_own_takes_over_only_enough_of_the_other_s_tests(
    tmp_path, monkeypatch, left, taken
):
    tests = ["c0", "c1", "u0", *[f"c{i}" for i in range(2, left + 2)]]
    groups = {t: "multinode_ray" for t in tests if t.startswith("c")}
    a, b = Worker("a"), Worker("b")
    sched = scheduler(tmp_path, monkeypatch, groups, tests, [a, b])
    assert a.sent == [0, 1]  # a starts the cluster
    # b holds u0 and there is nothing else but the cluster's tests: it takes the next of them
    # (starting a second cluster) if there are enough, or stops after u0
    assert b.sent == ([2, 3] if taken else [2]) and b.shutting_down is not taken
    run(sched, [a, b], [a, b])
    assert Counter(a.ran + b.ran) == Counter(range(len(tests)))


def test_no_two_tests_that_wait_start_together_while_there_is_other_work(tmp_path, monkeypatch):
    tests = ["w0", "w1", "w2", "u0", "u1", "u2"]
    waits = ["w0", "w1", "w2"]
    a, b = Worker("a"), Worker("b")
    sched = scheduler(tmp_path, monkeypatch, {}, tests, [a, b], waits=waits)
    # a holds w0 and w1 (one after the other); b, while a waits, takes u0 and u1, not w2
    assert (a.sent, b.sent) == ([0, 1], [3, 4])
    run(sched, [a, b], [b, b, a])
    assert Counter(a.ran + b.ran) == Counter(range(6))
    # when only waiting tests are left, they run beside each other rather than not at all
    assert 2 in a.ran + b.ran


def test_workers_that_collected_different_tests_fail_the_run_and_get_nothing(tmp_path, monkeypatch):
    a, b = Worker("a"), Worker("b")
    b.collected = ["t1", "t0"]  # e.g. a parametrization over a set, in another order
    reports = []
    scheduler(tmp_path, monkeypatch, {}, ["t0", "t1"], [a, b], reports=reports)
    assert a.sent == b.sent == []
    (report,) = reports
    assert report.failed and "Different tests were collected between a and b" in str(
        report.longrepr
    )


def test_a_restarted_worker_gets_tests_once_its_collection_matches(tmp_path, monkeypatch):
    a, b = Worker("a"), Worker("b")
    sched = scheduler(tmp_path, monkeypatch, {}, TESTS, [a, b])
    sched.remove_node(b)  # crashed: its two tests go back, first
    c = Worker("c")
    sched.add_node(c)
    a.ran.append(a.sent[0])
    sched.mark_test_complete(a, a.sent[0])  # before c's collection: c is sent nothing
    assert c.sent == []
    sched.add_node_collection(c, TESTS)
    sched.schedule()
    assert len(c.sent) == 2
    run(sched, [a, c], [a, c])
    assert sorted(a.ran + c.ran) == sorted(set(range(12)) - {2})  # t2: b's crash, reported
