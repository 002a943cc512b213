"""``dagster dev`` really started, on a free loopback port, and its GraphQL endpoint (what the UI
uses): for the tests and for ``make bench-sensor``'s daemon run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from audio_pipeline.resources.compute.ray_head import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


def wait_for(what: str, fn, timeout_s: float, log: Path | None = None):
    """``fn()``'s first truthy value within ``timeout_s``; else fail with the log's tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := fn():
            return value
        time.sleep(1)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise TimeoutError(f"{what} not within {timeout_s:.0f} s; log:\n{tail}")


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


@dataclass
class DagsterDev:
    url: str
    proc: subprocess.Popen
    log: Path


@contextmanager
def dagster_dev(work: Path, env: dict, timeout_s: float = 120) -> Iterator[DagsterDev]:
    """``dagster dev`` on a free loopback port with ``env``; stopped (process group) on exit.

    It ignores SIGTERM when backgrounded, so it runs in a session of its own and is stopped by
    PID: SIGINT, then SIGKILL.
    """
    port = free_port()
    log_path = work / f"dagster-dev-{port}.log"
    dagster = str(Path(sys.executable).with_name("dagster"))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [dagster, "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = DagsterDev(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_for("dagster dev", lambda: answers(f"{server.url}/server_info") or proc.poll(),
                 timeout_s, log_path)  # fmt: skip
        assert proc.poll() is None, log_path.read_text()[-4000:]
        yield server
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=20)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """One query to the webserver's GraphQL endpoint (what the UI uses)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if answer.get("errors"):
        raise RuntimeError(answer["errors"])
    return answer["data"]
