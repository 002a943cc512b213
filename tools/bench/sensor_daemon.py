"""``make bench-sensor`` under the real daemon: the new-file sensor on a stage of N files, ticked by
``dagster dev``'s daemon through the code server over gRPC, with Dagster's own sensor deadline
(``DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS``, 60 s unless set).

Runs stay queued (``max_concurrent_runs: 0``) so that only the sensor works. Phases, read from the
ticks Dagster records (GraphQL, what the UI shows; a tick's time is its start to its end):

* first registration: from the first tick until a tick with nothing new;
* a burst of ``--burst`` new files in one new folder, until a tick with nothing new;
* idle ticks (nothing new);
* a full rescan (``AUDIO_PIPELINE_SENSOR_FULL_RESCAN_EVERY`` is set so that one comes soon).

Peak memory is the code server's peak resident set (``VmHWM``): the process that evaluates the
sensor, Dagster's own memory included. Goals at 1M files on 2 cores: no failed tick, every tick
<= 15 s, idle <= 1 s, every file registered once, peak <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import duckdb

from tools.bench.sensor import GOALS, make_stage
from tools.dagster_dev import dagster_dev, graphql

SELECTOR = {
    "repositoryLocationName": "audio_pipeline.definitions:defs",
    "repositoryName": "__repository__",
    "sensorName": "new_stage_files_sensor",
}
TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 1000) {
      status timestamp endTimestamp runIds skipReason error { message } } } }
  }
}"""
INSTANCE_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 0
"""


def _full(tick: dict) -> bool:
    return (tick["skipReason"] or "").startswith("full pass")


def _ticks(url: str) -> list[dict] | None:
    sensor = graphql(url, TICKS, {"selector": SELECTOR})["sensorOrError"]
    if sensor["__typename"] != "Sensor":  # the code location is still loading
        return None
    ended = [t for t in sensor["sensorState"]["ticks"] if t["status"] != "STARTED"]
    return sorted(ended, key=lambda t: t["timestamp"])


def _wait(url: str, done, timeout_s: float) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ticks = _ticks(url)
        if ticks is not None and done(ticks):
            return ticks
        time.sleep(1)
    raise TimeoutError(f"the sensor did not get there within {timeout_s:.0f} s: {_ticks(url)}")


def _seconds(tick: dict) -> float:
    return round(tick["endTimestamp"] - tick["timestamp"], 2)


def _settled_after(start: int):
    """Ticks from ``start`` on include a SUCCESS followed by a SKIPPED tick."""

    def done(ticks: list[dict]) -> bool:
        statuses = [t["status"] for t in ticks[start:]]
        return "SUCCESS" in statuses and statuses[-1] == "SKIPPED"

    return done


def _code_server_peaks(pgid: int) -> dict[str, float]:
    """Peak resident set (MB) of each process of ``dagster dev``'s group that runs user code."""
    peaks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        if "grpc" not in cmd and "code-server" not in cmd:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[f"{entry.name}: {cmd[-90:]}"] = round(int(line.split()[1]) / 1024, 1)
    return peaks


def run(files: int, burst: int, work: Path, interval_s: int, rescan_every: int) -> dict:
    home = work / "home"
    started = time.perf_counter()
    make_stage(home / "stage", files)
    made_s = time.perf_counter() - started
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    env = os.environ | {
        "AUDIO_PIPELINE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "AUDIO_PIPELINE_SENSOR_INTERVAL_S": str(interval_s),
        "AUDIO_PIPELINE_SENSOR_FULL_RESCAN_EVERY": str(rescan_every),
    }
    env.pop("RAY_ADDRESS", None)
    out: dict = {"stage_files": files, "made_stage_s": round(made_s, 1)}
    out["deadline_s"] = float(env.get("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "60"))
    out["interval_s"], out["full_rescan_every"] = interval_s, rescan_every
    with dagster_dev(work, env) as server:
        ticks = _wait(server.url, _settled_after(0), 1800)
        first = ticks[: len(ticks) - 1]
        drop = home / "stage" / "burst"
        drop.mkdir()
        for i in range(burst):
            (drop / f"new{i:06d}.flac").touch()
        ticks = _wait(server.url, _settled_after(len(ticks)), 600)
        burst_ticks = ticks[len(first) + 1 : -1]
        # Ticks with nothing new, then the full rescan that full_rescan_every brings.
        ticks = _wait(
            server.url,
            lambda t: any(_full(x) for x in t[len(ticks) :]),
            rescan_every * (interval_s + 30) + 60,
        )
        tail = ticks[len(first) + 1 + len(burst_ticks) :]
        idle = [t for t in tail if t["status"] == "SKIPPED" and not _full(t)]
        rescan = [t for t in tail if _full(t)]
        peaks = _code_server_peaks(server.proc.pid)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        registered, distinct, batches = con.execute(
            "SELECT count(*), count(DISTINCT file_path), count(DISTINCT batch_key) FROM audio_files"
        ).fetchone()
    every = first + burst_ticks + tail
    out["first"] = {
        "ticks": len(first),
        "tick_s": [_seconds(t) for t in first],
        "runs_requested": sum(len(t["runIds"]) for t in first),
        "wall_s": round(first[-1]["endTimestamp"] - first[0]["timestamp"], 1),
    }
    out["burst"] = {"files": burst, "tick_s": [_seconds(t) for t in burst_ticks]}
    out["idle_tick_s"] = [_seconds(t) for t in idle]
    out["full_rescan_tick_s"] = [_seconds(t) for t in rescan]
    out["failed_ticks"] = [t["error"]["message"][:300] for t in every if t["status"] == "FAILURE"]
    out["registered"], out["distinct_files"], out["batches"] = registered, distinct, batches
    out["code_server_peak_mb"] = peaks
    peak = max(peaks.values(), default=float("nan"))
    out["goals"] = {
        "no failed tick": not out["failed_ticks"],
        "every tick <= 15 s": max(_seconds(t) for t in every) <= GOALS["tick_s"],
        "idle <= 1 s": bool(idle) and max(out["idle_tick_s"]) <= GOALS["idle_s"],
        "every file once": registered == distinct == files + burst,
        "peak <= 300 MB": peak <= GOALS["peak_mb"],
    }
    out["load"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.sensor_daemon")
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--interval-s", type=int, default=5, help="the sensor's interval")
    parser.add_argument(
        "--rescan-every", type=int, default=6, help="a full rescan every N ticks (default 60)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sensor-daemon-") as tmp:
        result = run(args.files, args.burst, Path(tmp), args.interval_s, args.rescan_every)
    print(json.dumps(result))
    first = result["first"]
    print(
        f"\nunder the daemon, {args.files:,} files: first registration in {first['ticks']} "
        f"tick(s) (longest {max(first['tick_s']):.1f} s, {first['wall_s']:.0f} s wall at a "
        f"{args.interval_s} s interval); burst of {args.burst:,}: "
        f"{max(result['burst']['tick_s'], default=0):.2f} s; idle "
        f"{max(result['idle_tick_s'], default=float('nan')):.2f} s; full rescan "
        f"{max(result['full_rescan_tick_s'], default=float('nan')):.2f} s; code server peak "
        f"{max(result['code_server_peak_mb'].values(), default=float('nan')):.0f} MB; goals: "
        + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in result["goals"].items())
    )
    return 0


if __name__ == "__main__":
    from tools import exit_on_sigterm

    exit_on_sigterm()
    raise SystemExit(main())
