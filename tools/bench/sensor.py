"""``make bench-sensor``: one sensor tick on a local stage of N files with M new ones.

Builds a stage of ``--files`` tiny audio-named files (100 folders), registers them all with a
first (full) tick, adds ``--new`` files, then times the incremental tick that finds them. The
goal is under 2 s for 100,000 files with 100 new.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import dagster as dg

from audio_pipeline.partitions import transcript_batches
from audio_pipeline.resources.stage import LocalStage
from audio_pipeline.resources.warehouse import DuckDBStore
from audio_pipeline.sensors import NewFilesSettings, build_new_stage_files_sensor


def _tick(sensor, resources, instance, cursor):
    started = time.perf_counter()
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
    elapsed = time.perf_counter() - started
    keys = [r.partition_key for r in result.run_requests]
    if keys:
        instance.add_dynamic_partitions(transcript_batches.name, keys)
    return result, keys, elapsed


def run(files: int, new: int, workdir: Path) -> dict:
    stage_root = workdir / "stage"
    per_folder = max(1, files // 100)
    for i in range(files):
        folder = stage_root / f"spk{i // per_folder:03d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"utt{i:06d}.flac").write_bytes(b"")
    resources = {
        "stage": LocalStage(root=str(stage_root)),
        "store": DuckDBStore(path=str(workdir / "warehouse.duckdb")),
        "new_files": NewFilesSettings(min_age_s=0, overlap_s=1.0),
    }
    sensor = build_new_stage_files_sensor()
    with dg.instance_for_test() as instance:
        first, first_keys, first_s = _tick(sensor, resources, instance, None)
        time.sleep(1.5)  # new files strictly after the watermark and its overlap
        drop = stage_root / "incoming"
        drop.mkdir()
        for i in range(new):
            (drop / f"new{i:04d}.flac").write_bytes(b"")
        second, second_keys, second_s = _tick(sensor, resources, instance, first.cursor)
        third, third_keys, third_s = _tick(sensor, resources, instance, second.cursor)
    registered = sum(1 for _ in stage_root.rglob("*.flac"))
    return {
        "stage_files": registered,
        "first_tick_s": round(first_s, 3),
        "first_tick_batches": len(first_keys),
        "new_files": new,
        "tick_s": round(second_s, 3),
        "tick_batches": len(second_keys),
        "idle_tick_s": round(third_s, 3),
        "idle_tick_batches": len(third_keys),
        "goal_s": 2.0,
        "goal_met": second_s < 2.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.sensor")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sensor-") as tmp:
        result = run(args.files, args.new, Path(tmp))
    print(json.dumps(result, indent=2))
    print(
        f"\nsensor tick on {result['stage_files']:,} files with {args.new} new: "
        f"{result['tick_s']:.2f} s (goal < 2 s: {'met' if result['goal_met'] else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    from tools import exit_on_sigterm

    exit_on_sigterm()
    raise SystemExit(main())
