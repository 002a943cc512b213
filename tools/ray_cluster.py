"""A multi-node Ray cluster on loopback, for the tests and the Snowflake rehearsal (no product).

The product starts one head (``ray start --head``). Several raylets on one machine that all stay
on 127.0.0.1 need Ray's own test cluster, ``ray.cluster_utils.Cluster`` (a DeveloperAPI): ``ray
start --address`` rewrites a loopback node address to the host's. The cluster lives in a keeper
process of its own, so that the caller's ``ray.init`` and the cluster's lifetime stay apart::

    python -m tools.ray_cluster --dir DIR --temp-dir TMP --gcs-port P --dashboard-port Q \
        [--cpus 2] [--gpus 1] [--object-store-mb 512]

prints one JSON line when the head is up, then reads commands on stdin, one per line: ``add``
answers at once (a JSON line) and starts a worker raylet, which joins while the caller goes on.
End of input, ``stop``, SIGTERM or SIGINT stop every node and remove ``TMP/ray``.
``LoopbackCluster`` drives a keeper from Python (and waits for a node where asked).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from audio_pipeline.resources.compute.ray_head import (
    ISOLATED_PORT_FLAGS,
    alive_nodes,
    free_port,
    isolated_port_flags,
)

# ``ray start`` flag -> the node argument of the same port (Ray's CLI renames one of them)
_PORT_ARGS = {"dashboard-agent-grpc-port": "metrics_agent_port"}


def _port_args(taken: set[int], head: bool) -> dict[str, int]:
    """Every Ray service of one node on a free loopback port of its own, distinct from every
    port (and worker port range) an earlier node of the cluster took; ``taken`` grows."""
    flags = tuple(f for f in ISOLATED_PORT_FLAGS if head or f != "ray-client-server-port")
    args = {}
    for flag in isolated_port_flags(taken, flags=flags):
        name, value = flag.removeprefix("--").split("=")
        args[_PORT_ARGS.get(name, name.replace("-", "_"))] = int(value)
    taken.update(v for k, v in args.items() if not k.endswith("worker_port"))
    taken.update(range(args["min_worker_port"], args["max_worker_port"] + 1))
    return args


def keeper(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ray_cluster")
    parser.add_argument("--dir", required=True, help="the worker logs go here")
    parser.add_argument(
        "--temp-dir",
        required=True,
        help="Ray's session files go in <temp-dir>/ray (removed at exit)",
    )
    parser.add_argument("--gcs-port", type=int, required=True)
    parser.add_argument("--dashboard-port", type=int, required=True)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=0, help="logical GPUs per node")
    parser.add_argument("--object-store-mb", type=int, default=512)
    args = parser.parse_args(argv)
    # before Ray is imported: the cluster's address file and sessions under <temp-dir>/ray, and
    # every node on 127.0.0.1 (Ray otherwise advertises the host's address)
    os.environ["RAY_TMPDIR"] = args.temp_dir
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster

    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ray_tmp = Path(args.temp_dir) / "ray"  # where Ray looks under RAY_TMPDIR
    ray_tmp.mkdir(parents=True, exist_ok=True)
    taken = {args.gcs_port, args.dashboard_port}
    common = {
        "node_ip_address": "127.0.0.1",
        "num_cpus": args.cpus,
        "num_gpus": args.gpus,
        "object_store_memory": args.object_store_mb * 1024 * 1024,
        "temp_dir": str(ray_tmp),
    }
    cluster = None

    def reply(obj: dict) -> None:
        print(json.dumps(obj), flush=True)

    def stop(*_sig) -> None:
        raise SystemExit(0)

    def own_signals() -> None:  # each node Ray starts installs its own SIGTERM handler
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    own_signals()
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args=common
            | _port_args(taken, head=True)
            | {
                "gcs_server_port": args.gcs_port,
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": args.dashboard_port,
            },
        )
        own_signals()
        reply({"gcs_address": cluster.address, "pid": os.getpid()})
        workers = 0
        for line in sys.stdin:
            command = line.strip()
            if command == "stop":
                break
            if command != "add":
                reply({"error": f"unknown command {command!r}"})
                continue
            # Answered at once: the caller goes on (a node joining a running job) or waits for the
            # node to register with its own deadline; Ray's own wait gives up after 30 s on a
            # busy machine. A node that fails to start is in this keeper's log (stderr).
            workers += 1
            reply({"adding": workers})
            try:
                node = cluster.add_node(wait=False, **common, **_port_args(taken, head=False))
            except Exception as e:  # the cluster goes on without it
                print(f"worker raylet {workers} did not start: {e!r}", file=sys.stderr, flush=True)
                continue
            finally:
                own_signals()
            (out_dir / f"worker-{workers}.log").write_text(
                f"worker raylet {workers}: 127.0.0.1, {args.cpus} CPU, {args.gpus} GPU; "
                f"Ray logs in {node.get_logs_dir_path()}\n"
            )
    finally:
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)  # only what this keeper made
    return 0


class LoopbackCluster:
    """A keeper process (``python -m tools.ray_cluster``) and the cluster it runs.

    ``stop()`` ends the keeper, which stops every node and removes the cluster's temp dir."""

    def __init__(
        self,
        workdir: Path,
        cpus_per_node: int = 2,
        gpus_per_node: int = 0,
        object_store_mb: int = 512,
        start_timeout_s: float = 120.0,
    ):
        self.workdir = Path(workdir)
        self.cpus_per_node = cpus_per_node
        self.gpus_per_node = gpus_per_node
        self.object_store_mb = object_store_mb
        self.start_timeout_s = start_timeout_s
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        # short: Ray's socket paths under it must fit in 107 bytes
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rc-"))
        self.proc: subprocess.Popen | None = None
        self.workers = 0

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "keeper.log"

    def worker_logs(self, n: int) -> list[Path]:
        return [self.workdir / f"worker-{i}.log" for i in range(1, n + 1)]

    def start(self) -> LoopbackCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = os.environ | {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            # keeps every node on 127.0.0.1 (Ray otherwise advertises the host's address)
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_TMPDIR": str(self.temp_dir),
            # the nodes' processes and the jobs they run make their temp files in it too
            "TMPDIR": str(self.temp_dir),
        }
        env.pop("RAY_ADDRESS", None)
        cmd = [sys.executable, "-m", "tools.ray_cluster", "--dir", str(self.workdir)]
        cmd += ["--temp-dir", str(self.temp_dir), "--gcs-port", str(self.gcs_port)]
        cmd += ["--dashboard-port", str(self.dashboard_port), "--cpus", str(self.cpus_per_node)]
        cmd += ["--gpus", str(self.gpus_per_node), "--object-store-mb", str(self.object_store_mb)]
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    text=True,
                    cwd=Path(__file__).resolve().parents[1],
                    start_new_session=True,
                )
            self._read()
            self._wait(lambda: len(self.nodes()) >= 1)
        except BaseException:
            self.stop()
            raise
        return self

    def _read(self) -> dict:
        """The keeper's next answer, within the start deadline."""
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(self.start_timeout_s):
                raise TimeoutError(f"the Ray cluster keeper did not answer; see {self.log_path}")
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the Ray cluster keeper exited: {tail}")
        return json.loads(line)

    def _wait(self, ready, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        while not ready():
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"the Ray cluster keeper exited; see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Ray cluster was not ready; see {self.log_path}")
            time.sleep(0.3)

    def nodes(self) -> list[dict]:
        return alive_nodes(self.dashboard_url)

    def add_worker(self, wait: bool = True) -> int:
        """Start a worker raylet; with ``wait``, return once it is alive. Its number (1, 2, ...)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("add\n")
        self.proc.stdin.flush()
        self._read()
        self.workers += 1
        if wait:
            self._wait(lambda: len(self.nodes()) > self.workers)
        return self.workers

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the keeper (its nodes with it); SIGKILL the process group if it does not leave."""
        proc, self.proc = self.proc, None
        try:
            if proc is not None:
                try:
                    if proc.stdin is not None:
                        proc.stdin.close()
                    proc.wait(timeout_s)
                except (subprocess.TimeoutExpired, BrokenPipeError):
                    pass
                finally:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
                    if proc.stdout is not None:
                        proc.stdout.close()
        finally:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(keeper())
