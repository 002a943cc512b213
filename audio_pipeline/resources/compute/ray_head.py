"""A Ray head on this machine: a ``ray start --head`` process we start, record and stop by PID.

The head binds and advertises 127.0.0.1 only (tools/ray_cluster.py adds worker raylets for the
multi-node tests). Nothing here ever runs ``ray stop``, which would stop every Ray cluster on the
machine.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .base import ComputePoolError, log_tail

ISOLATED_PORT_FLAGS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
)


def http_json(url: str, timeout: float = 2.0) -> dict | None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - http(s) only
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def alive_nodes(dashboard_url: str) -> list[dict]:
    """Alive nodes of the cluster behind a dashboard, as its state API lists them."""
    data = http_json(f"{dashboard_url}/api/v0/nodes?limit=1000", timeout=10)
    if not data or not data.get("result"):
        return []
    return [n for n in data["data"]["result"]["result"] if n.get("state") == "ALIVE"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_port_range(size: int, avoid: set[int]) -> int:
    """The first port of ``size`` consecutive ports that are free right now."""
    for _ in range(50):
        low = random.randrange(20_000, 40_000)
        if any(low <= p < low + size for p in avoid):
            continue
        try:
            for port in (low, low + size // 2, low + size - 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return low
        except OSError:
            continue
    raise ComputePoolError("no free range of worker ports found")


def isolated_port_flags(
    taken: set[int], workers: int = 200, flags: tuple[str, ...] = ISOLATED_PORT_FLAGS
) -> list[str]:
    """``ray start`` flags giving every Ray service its own free port, all distinct."""
    low = _free_port_range(workers, taken)
    reserved = set(taken) | set(range(low, low + workers))
    out = [f"--min-worker-port={low}", f"--max-worker-port={low + workers - 1}"]
    for flag in flags:
        port = free_port()
        while port in reserved:
            port = free_port()
        reserved.add(port)
        out.append(f"--{flag}={port}")
    return out


def ray_env() -> dict[str, str]:
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    # A single-machine cluster: the head binds and advertises loopback, not the host's address
    # (Ray otherwise replaces 127.0.0.1 by the host IP, for other nodes' sake).
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env.pop("RAY_ADDRESS", None)
    return env


def _ray_bin() -> str:
    ray_bin = Path(sys.executable).with_name("ray")
    return str(ray_bin) if ray_bin.exists() else "ray"


def _kill_groups(pids: list[int], timeout_s: float) -> list[int]:
    """SIGTERM each process group, SIGKILL what is left after ``timeout_s``; the groups found."""
    found = []
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
            found.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout_s
    alive = list(found)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _group_alive(pid)]
    for pid in alive:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return found


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies left unreaped do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@dataclass
class RayHead:
    """``ray start --head --block`` on 127.0.0.1 (one node; tools/ray_cluster runs several)."""

    state_dir: Path
    gcs_port: int = 6379
    dashboard_port: int = 8265
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory_mb: int = 2048
    isolated_ports: bool = True  # Ray's internal services on free ports (see LocalRayCompute)
    start_timeout_s: float = 90.0
    ray_bin: str | None = None  # another environment's `ray` (default: this one's)
    cwd: Path | None = None  # the head's working directory (default: this process's)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def temp_dir(self) -> Path:
        """Ray's session files, logs and runtime environments for this cluster alone."""
        return Path(tempfile.gettempdir()) / f"ray-{self.gcs_port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"head-{self.dashboard_port}.pid"

    def is_up(self) -> bool:
        return http_json(f"{self.dashboard_url}/api/version") is not None

    def nodes(self) -> list[dict]:
        return alive_nodes(self.dashboard_url)

    def _launch(self, cmd: list[str], name: str, log=None) -> tuple[subprocess.Popen, Path]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.state_dir / f"{name}.log"
        if log:
            log.info(f"starting Ray {name} (dashboard {self.dashboard_url}); log {log_path}")
        # The head's processes (and the jobs' drivers and workers they start) make their temp
        # files inside its temp dir: a worker that is killed leaves nothing in /tmp after stop.
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ray_env() | {"TMPDIR": str(self.temp_dir)},
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.cwd,
            )
        return proc, log_path

    def _node_flags(self, num_cpus: int | None, num_gpus: int | None) -> list[str]:
        flags = ["--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        flags.append(f"--object-store-memory={self.object_store_memory_mb * 1024 * 1024}")
        # Ray's default /tmp/ray is shared by every cluster on the machine, and a job's driver
        # finds its cluster through /tmp/ray/ray_current_cluster: the latest head's, not ours.
        flags.append(f"--temp-dir={self.temp_dir}")
        if num_cpus is not None:
            flags.append(f"--num-cpus={num_cpus}")
        if num_gpus is not None:
            flags.append(f"--num-gpus={num_gpus}")
        return flags

    def _wait(self, proc: subprocess.Popen, log_path: Path, ready) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ComputePoolError(
                    f"ray start exited with {proc.returncode}:\n{log_tail(log_path.read_text())}"
                )
            if ready():
                return
            time.sleep(0.5)
        _kill_groups([proc.pid], 10)
        raise ComputePoolError(
            f"Ray node did not come up within {self.start_timeout_s:.0f} s:\n"
            f"{log_tail(log_path.read_text())}"
        )

    def start(self, log=None) -> None:
        cmd = [
            self.ray_bin or _ray_bin(),
            "start",
            "--head",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            "--include-dashboard=true",
            *self._node_flags(self.num_cpus, self.num_gpus),
        ]
        if self.isolated_ports:
            cmd += isolated_port_flags({self.gcs_port, self.dashboard_port}, workers=1000)
        proc, log_path = self._launch(cmd, f"head-{self.dashboard_port}", log)
        self.pid_file.write_text(str(proc.pid))
        try:
            self._wait(proc, log_path, lambda: self.is_up() and bool(self.nodes()))
        except ComputePoolError:
            # `ray start` may have left some of its processes (GCS, dashboard) when it gave up:
            # its whole group goes, and its temp dir (the log stays in state_dir).
            self.pid_file.unlink(missing_ok=True)
            _kill_groups([proc.pid], 5)
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            raise

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the head we started (by recorded PID); True if it stopped.

        SIGTERM, then SIGKILL after ``timeout_s``: Ray's processes take 15-30 s to leave on
        their own, and a stopped cluster keeps no state worth a graceful exit.
        """
        pid = int(self.pid_file.read_text().strip() or 0) if self.pid_file.exists() else 0
        self.pid_file.unlink(missing_ok=True)
        head_stopped = bool(pid) and pid in _kill_groups([pid], timeout_s)
        if head_stopped:  # its sessions, logs and runtime environments: nothing reads them now
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            # a job's driver runs in a session of its own, which Ray ends within a second of
            # the head: what it wrote meanwhile goes too
            time.sleep(1.0)
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return head_stopped
