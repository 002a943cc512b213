"""pytest-xdist scheduling for this suite (xdist's public ``pytest_xdist_make_scheduler`` hook).

xdist starts a session fixture once per worker: with its default scheduling every worker starts
the session's Ray head and every worker the multi-node cluster with the emulated account on it,
which then sit beside each other for the whole run (an idle three-node cluster costs about 6 %
of a core, its start 8 core-seconds). Here every test that uses one of those fixtures goes to
the worker that already started it, so each starts once per run. Otherwise tests go out as with
``--maxschedchunk 1``: one at a time, in collection order (conftest sorts the longest first),
each worker holding the test it runs and the next one (a worker runs a test once it knows the
next, for the fixtures' teardown).

Tests marked ``waits`` spend most of their time waiting (a timeout, an outage, Dagster's Pipes
reader draining for 10 s after a job that never sent ``closed``): one is not started while
another worker holds one too, if there is other work, so that the CPU has something to do.

The controller collects nothing: each worker writes which tests use which fixture and which
wait to the file named by ``AFFINITY_FILE`` (conftest), read when scheduling starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from xdist.report import report_collection_diff

AFFINITY_FILE = "AUDIO_PIPELINE_TEST_AFFINITY"
# A test that uses both goes with the first: the cluster worker can start a head as well.
AFFINITY_FIXTURES = ("multinode_ray", "ray_compute")
# When a worker has nothing left of its own, it takes another worker's tests (starting that
# fixture again) only if that many are left; otherwise it stops and the owner finishes them.
TAKE_OVER_AT = 3


def write_affinity(items) -> None:
    """On a worker: the collected tests that use an affinity fixture (``{nodeid: fixture}``),
    and those marked ``waits``."""
    path = os.environ.get(AFFINITY_FILE)
    if not path:
        return
    groups = {}
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        group = next((f for f in AFFINITY_FIXTURES if f in names), None)
        if group:
            groups[item.nodeid] = group
    waits = [item.nodeid for item in items if item.get_closest_marker("waits")]
    tmp = Path(f"{path}.{os.getpid()}")
    tmp.write_text(json.dumps({"groups": groups, "waits": waits}))
    os.replace(tmp, path)  # every worker writes the same content


class AffinityScheduling:
    """xdist's scheduler protocol (``xdist.scheduler.protocol.Scheduling``)."""

    def __init__(self, config, log, numnodes: int) -> None:
        self.config = config
        self.log = log
        self.numnodes = numnodes
        self.node2collection: dict = {}
        self.node2pending: dict = {}
        self.pending: list[int] = []
        self.collection: list[str] | None = None
        self.group: dict[int, str] = {}
        self.waits: set[int] = set()
        self.owners: dict[str, set] = {}

    # -- the protocol's properties
    @property
    def nodes(self) -> list:
        return list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.pending:
            return False
        return all(len(p) < 2 for p in self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        return bool(self.pending) or any(self.node2pending.values())

    # -- events
    def add_node(self, node) -> None:
        self.node2pending[node] = []

    def add_node_collection(self, node, collection: Sequence[str]) -> None:
        if self.collection is not None and list(collection) != self.collection:
            self._collections_differ(node, collection)  # a restarted worker: it gets nothing
            return
        self.node2collection[node] = list(collection)

    def mark_test_complete(self, node, item_index: int, duration: float = 0) -> None:
        self.node2pending[node].remove(item_index)
        self._feed_all()

    def mark_test_pending(self, item: str) -> None:
        self.pending.insert(0, self.collection.index(item))
        self._feed_all()

    def remove_pending_tests_from_node(self, node, indices: Sequence[int]) -> None:
        raise NotImplementedError

    def remove_node(self, node) -> str | None:
        """A worker finished or crashed: what it had not run goes back to the others."""
        pending = self.node2pending.pop(node)
        for owners in self.owners.values():
            owners.discard(node)
        if not pending:
            return None
        crashed = self.collection[pending.pop(0)]
        self.pending[:0] = pending  # first again, as they were
        self._feed_all()
        return crashed

    def schedule(self) -> None:
        if self.collection is None:
            (first, collection), *others = self.node2collection.items()
            differ = [(n, c) for n, c in others if c != collection]
            for node, other in differ:
                self._collections_differ(node, other, first, collection)
            if differ:
                return
            self.collection = collection
            self.pending = list(range(len(self.collection)))
            path = os.environ.get(AFFINITY_FILE)
            found = json.loads(Path(path).read_text()) if path and Path(path).exists() else {}
            index = {nodeid: i for i, nodeid in enumerate(self.collection)}
            groups = found.get("groups", {})
            self.group = {index[n]: g for n, g in groups.items() if n in index}
            self.waits = {index[n] for n in found.get("waits", ()) if n in index}
        self._feed_all()

    def _collections_differ(self, node, other, first=None, collection=None) -> None:
        """Fail the run as xdist's own schedulers do: a collect report naming the difference."""
        first = first or next(iter(self.node2collection))
        collection = collection or self.collection
        diff = report_collection_diff(collection, other, first.gateway.id, node.gateway.id)
        self.log(diff)
        report = pytest.CollectReport(node.gateway.id, "failed", longrepr=diff, result=[])
        self.config.hook.pytest_collectreport(report=report)

    # -- choosing
    def _feed_all(self) -> None:
        for node in self.nodes:
            self._feed(node)

    def _feed(self, node) -> None:
        if node.shutting_down or node not in self.node2collection:
            return  # shutting down, or a restarted worker whose collection has not come yet
        queue = self.node2pending[node]
        while len(queue) < 2:
            at = self._pick(node)
            if at is None:
                node.shutdown()  # it runs what it holds, then leaves
                return
            index = self.pending.pop(at)
            if group := self.group.get(index):
                self.owners.setdefault(group, set()).add(node)
            queue.append(index)
            node.send_runtest_some([index])

    def _pick(self, node) -> int | None:
        """Position in ``pending`` of the next test for ``node``, None if it should stop."""
        if not self.pending:
            return None
        mine = {g for g, owners in self.owners.items() if node in owners}
        # a worker starts a second fixture only when every other worker has one already
        others_free = any(
            n is not node and not n.shutting_down and not any(n in o for o in self.owners.values())
            for n in self.nodes
        )
        others_wait = any(
            i in self.waits
            for other, queue in self.node2pending.items()
            if other is not node
            for i in queue
        )
        later = None  # the first test for this worker that waits while another worker waits
        for at, index in enumerate(self.pending):
            group = self.group.get(index)
            if (
                group is None
                or group in mine
                or (not self.owners.get(group) and not (mine and others_free))
            ):
                if index in self.waits and others_wait:
                    later = at if later is None else later
                    continue
                return at
        if later is not None:
            return later
        # Only tests of fixtures this worker has not started are left. One no worker has started
        # yet (in a partial run): it starts it rather than stop. Another worker's: it takes them
        # over if there are enough to be worth a second start, or if no worker is left to run
        # them; else it stops and leaves them to their owner.
        first = self.group[self.pending[0]]
        left = sum(1 for index in self.pending if self.group.get(index) == first)
        owners = [n for n in self.owners.get(first, ()) if n is not node and not n.shutting_down]
        return 0 if left >= TAKE_OVER_AT or not owners else None
