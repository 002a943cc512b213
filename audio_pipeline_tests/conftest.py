"""Shared fixtures: real components, really started (a Ray head, DuckDB files, HTTP servers)."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from . import affinity
from .helpers import SAMPLE_TREE, SYSTEM_TMPDIR, free_port


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture(scope="session")
def ray_compute(tmp_path_factory):
    """A real Ray head (``ray start --head`` on loopback), on ports of its own, for the session."""
    from audio_pipeline.resources.compute import LocalRayCompute

    compute = LocalRayCompute(
        home=str(tmp_path_factory.mktemp("rayhome")),
        gcs_port=free_port(),
        dashboard_port=free_port(),
        object_store_memory_mb=1024,
    )
    info = compute.ensure_pool()
    assert info["nodes"] == 1 and info["cpus"] >= 1
    yield compute
    assert compute.stop()


class MultiNodeCluster:
    """A head and worker raylets on this machine, on loopback, one cluster (tools/ray_cluster)."""

    def __init__(self, cluster, home: Path):
        from audio_pipeline.resources.compute import LocalRayCompute

        self.cluster = cluster
        # an existing cluster, as a user's RAY_ADDRESS names one: nothing to start or stop
        self.compute = LocalRayCompute(home=str(home), address=cluster.dashboard_url)
        self.late_joined = False

    @property
    def gcs_address(self) -> str:
        return self.cluster.gcs_address

    def nodes(self) -> list[dict]:
        return self.cluster.nodes()

    def join_late(self) -> None:
        """Start the last worker without waiting for it (idempotent): it joins a running job."""
        if not self.late_joined:
            self.late_joined = True
            self.cluster.add_worker(wait=False)

    def wait_nodes(self, n: int, timeout_s: float = 90.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(nodes := self.nodes()) < n:
            if self.cluster.proc is None or self.cluster.proc.poll() is not None:
                raise RuntimeError(f"the cluster's keeper exited; see {self.cluster.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(nodes)} of {n} Ray nodes alive after {timeout_s} s")
            time.sleep(0.5)
        return nodes


@pytest.fixture(scope="session")
def multinode_ray(tmp_path_factory):
    """A head plus two worker raylets, each with 2 CPUs and 1 GPU.

    The GPUs are logical: Ray schedules by them, so the payload's GPU plan (one Whisper actor
    per GPU) runs, while the engines compute on the CPU. The head and the first worker start
    here; the second joins when a test calls ``join_late()``, as a node joining a running job
    does.
    """
    from tools.ray_cluster import LoopbackCluster

    root = tmp_path_factory.mktemp("multinode")
    with LoopbackCluster(root / "cluster", cpus_per_node=2, gpus_per_node=1) as cluster:
        cluster.add_worker()
        yield MultiNodeCluster(cluster, root / "home")


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (resumable downloads); counts requests."""

    requests_seen: list = []
    drop_after: int | None = None  # close the connection after this many body bytes, once

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        type(self).requests_seen.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        limit = type(self).drop_after
        if limit is not None:
            type(self).drop_after = None
            self.wfile.write(body[:limit])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def http_mirror(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (base_url, folder, handler)."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(RangeHandler):
        requests_seen = []
        drop_after = None

        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www, Handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A writable copy of the sample subset tree."""
    dest = tmp_path / "mirror" / "LibriSpeech" / "sample"
    shutil.copytree(SAMPLE_TREE, dest)
    return dest


def pytest_configure(config):
    """SIGTERM unwinds like Ctrl-C: session fixtures stop the Ray heads and servers they started."""
    from tools import exit_on_sigterm

    exit_on_sigterm()
    _temp_files_in_a_directory_of_the_sessions(config)


def _temp_files_in_a_directory_of_the_sessions(config) -> None:
    """Whatever the tests start (Ray heads, pip, Chromium, Dagster, the emulated account) makes
    its temp files under one directory of this session's (TMPDIR), removed at the session's end;
    pytest's own ``tmp_path`` folders stay in the system's temp dir (PYTEST_DEBUG_TEMPROOT)."""
    if SYSTEM_TMPDIR in os.environ:  # an xdist worker, or a test's own pytest: already moved
        return
    system = tempfile.gettempdir()
    session = tempfile.mkdtemp(prefix="apt-", dir=system)  # short: Ray's socket paths go in it
    os.environ |= {SYSTEM_TMPDIR: system, "TMPDIR": session}
    os.environ[affinity.AFFINITY_FILE] = os.path.join(session, "affinity.json")
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", system)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    config.add_cleanup(lambda: shutil.rmtree(session, ignore_errors=True))


# Tiers: `make test-fast` (-m "not slow") starts no subprocess and no Ray; a test that needs a
# Ray cluster or the emulated account (Ray nodes, job containers) is slow by its fixtures.
SLOW_FIXTURES = {
    "ray_compute",
    "multinode_ray",
    "job_cluster",
    "emulated_account",
    "acct_connection",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if hasattr(config, "workerinput"):  # an xdist worker: the scheduler hands tests out in order
        # the longest tests first, then the end-to-end tier, then the unit tier, whose short
        # tests fill the workers' ends
        items.sort(key=lambda item: [item.get_closest_marker(m) is None for m in ("long", "slow")])
        affinity.write_affinity(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test`'s workers: each session Ray cluster starts on one worker only (affinity.py)."""
    if config.getoption("dist") == "load":
        from xdist.workermanage import parse_tx_spec_config

        return affinity.AffinityScheduling(config, log, len(parse_tx_spec_config(config)))
    return None


class _NoSubprocess(subprocess.Popen):
    def __init__(self, args, *a, **kw):
        raise RuntimeError(
            f"the unit tier starts no subprocess ({args!r}): mark the test slow (end-to-end tier)"
        )


@pytest.fixture(autouse=True)
def _unit_tier_starts_no_subprocess(request, monkeypatch):
    if request.config.getoption("markexpr") == "not slow":
        monkeypatch.setattr(subprocess, "Popen", _NoSubprocess)
    yield
