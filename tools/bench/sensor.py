"""``make bench-sensor``: the new-file sensor on a local stage of N files, tick by tick.

Builds a stage of ``--files`` empty audio-named files in 100 folders (the sensor reads no
content), then ticks the sensor in process (``build_sensor_context``, a real DuckDB file) the
way the daemon would, adding each tick's partitions:

* first registration: ticks until the whole stage is registered (each tick inside its budget);
* a burst of ``--burst`` new files in one new folder;
* an idle tick (nothing new; every file still inside the overlap window);
* a full rescan (``full_rescan_every`` reached), over as many ticks as it takes.

Peak memory is the process's peak resident set (``ru_maxrss``) after each phase; the baseline
is the same before the first tick (imports and the Dagster instance). Goals at 1M files on 2
cores: every tick <= 15 s, idle <= 1 s, peak <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import dagster as dg

from audio_pipeline.partitions import transcript_batches
from audio_pipeline.resources.stage import LocalStage
from audio_pipeline.resources.warehouse import DuckDBStore
from audio_pipeline.sensors import NewFilesSettings, ScanCursor, build_new_stage_files_sensor

GOALS = {"tick_s": 15.0, "idle_s": 1.0, "peak_mb": 300.0}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tick(sensor, resources, instance, cursor):
    started = time.perf_counter()
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
    elapsed = time.perf_counter() - started
    keys = [r.partition_key for r in result.run_requests]
    if keys:
        instance.add_dynamic_partitions(transcript_batches.name, keys)
    return result, keys, elapsed


def _until_done(sensor, resources, instance, cursor, max_ticks=1000):
    """Tick until a tick finishes its pass; returns (cursor, per-tick seconds, batch keys)."""
    times, keys = [], []
    for _ in range(max_ticks):
        result, new, elapsed = _tick(sensor, resources, instance, cursor)
        cursor = result.cursor
        times.append(round(elapsed, 3))
        keys += new
        if ScanCursor.parse(cursor).scan is None:
            return cursor, times, keys
    raise RuntimeError(f"no end after {max_ticks} ticks")


def make_stage(root: Path, files: int, folders: int = 100) -> None:
    per_folder = max(1, files // folders)
    for i in range(files):
        folder = root / f"spk{i // per_folder:03d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"utt{i:07d}.flac").touch()


def run(files: int, burst: int, workdir: Path, budget_s: float) -> dict:
    stage_root = workdir / "stage"
    started = time.perf_counter()
    make_stage(stage_root, files)
    made_s = time.perf_counter() - started
    settings = NewFilesSettings(min_age_s=0, tick_budget_s=budget_s)
    resources = {
        "stage": LocalStage(root=str(stage_root)),
        "store": DuckDBStore(path=str(workdir / "warehouse.duckdb")),
        "new_files": settings,
    }
    sensor = build_new_stage_files_sensor()
    out: dict = {"stage_files": files, "made_stage_s": round(made_s, 1), "budget_s": budget_s}
    with dg.instance_for_test() as instance:
        resources["store"].ensure_tables()
        out["baseline_mb"] = round(peak_mb(), 1)  # imports (dagster, duckdb, pyarrow), instance
        cursor, times, keys = _until_done(sensor, resources, instance, None)
        out["first"] = {
            "ticks": len(times),
            "total_s": round(sum(times), 2),
            "max_tick_s": max(times),
            "tick_s": times,
            "batches": len(keys),
            "peak_mb": round(peak_mb(), 1),
        }
        registered = resources["store"].query(
            "SELECT count(*), count(DISTINCT batch_key) FROM audio_files"
        )[0]
        out["first"]["registered"], out["first"]["distinct_batches"] = registered

        drop = stage_root / "burst"
        drop.mkdir()
        for i in range(burst):
            (drop / f"new{i:06d}.flac").touch()
        time.sleep(1.1)  # the burst's folder settles (folder times are trusted a second on)
        cursor, times, keys = _until_done(sensor, resources, instance, cursor)
        out["burst"] = {
            "files": burst,
            "ticks": len(times),
            "tick_s": times,
            "batches": len(keys),
            "peak_mb": round(peak_mb(), 1),
        }

        _, keys, idle_s = _tick(sensor, resources, instance, cursor)
        result, _, _ = _tick(sensor, resources, instance, cursor)
        out["idle"] = {"tick_s": round(idle_s, 3), "batches": len(keys)}

        full = ScanCursor.parse(result.cursor)
        full.ticks = 0  # full_rescan_every reached
        cursor, times, keys = _until_done(sensor, resources, instance, full.dump())
        out["full_rescan"] = {
            "ticks": len(times),
            "total_s": round(sum(times), 2),
            "max_tick_s": max(times),
            "batches": len(keys),
            "peak_mb": round(peak_mb(), 1),
        }
    ticks = out["first"]["tick_s"] + out["burst"]["tick_s"]
    out["goals"] = {
        "every tick <= 15 s": max(ticks + [out["full_rescan"]["max_tick_s"]]) <= GOALS["tick_s"],
        "idle <= 1 s": out["idle"]["tick_s"] <= GOALS["idle_s"],
        "peak <= 300 MB": out["full_rescan"]["peak_mb"] <= GOALS["peak_mb"],
        "growth <= 300 MB": out["full_rescan"]["peak_mb"] - out["baseline_mb"] <= GOALS["peak_mb"],
        "every file once": out["first"]["registered"] == files,
    }
    out["load"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.sensor")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=NewFilesSettings().tick_budget_s,
        help="the sensor's tick budget (its default)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sensor-") as tmp:
        result = run(args.files, args.burst, Path(tmp), args.budget_s)
    print(json.dumps(result))
    first, burst = result["first"], result["burst"]
    print(
        f"\n{args.files:,} files: first registration {first['total_s']:.1f} s in "
        f"{first['ticks']} tick(s) (longest {first['max_tick_s']:.1f} s, peak "
        f"{first['peak_mb']:.0f} MB, baseline {result['baseline_mb']:.0f} MB); "
        f"burst of {burst['files']:,}: {max(burst['tick_s']):.2f} s; "
        f"idle {result['idle']['tick_s']:.2f} s; full rescan {result['full_rescan']['total_s']:.1f}"
        f" s in {result['full_rescan']['ticks']} tick(s); goals: "
        + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in result["goals"].items())
    )
    return 0


if __name__ == "__main__":
    from tools import exit_on_sigterm

    exit_on_sigterm()
    raise SystemExit(main())
