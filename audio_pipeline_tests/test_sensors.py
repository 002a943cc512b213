"""new_stage_files_sensor on a real local stage and DuckDB, ticked with build_sensor_context."""

import datetime as dt
import json

import dagster as dg
import pytest

from audio_pipeline import sensors
from audio_pipeline.definitions import build_definitions
from audio_pipeline.partitions import transcript_batches
from audio_pipeline.sensors import (
    NewFilesSettings,
    ScanCursor,
    build_new_stage_files_sensor,
    discover_new_files,
    transcribe_new_files_schedule,
)

from .helpers import SAMPLE_TREE, make_resources, tick

ODD_NAMES = [
    "with space.flac",
    "quote'\"s.flac",
    "semi;colon.flac",
    "ünïcødé-日本.flac",
    "-leading-dash.flac",
]


def drop(stage_root, rel, data=b"RIFF....WAVEfmt "):
    path = stage_root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def res(home):
    r = make_resources(home)
    r["new_files"] = NewFilesSettings(min_age_s=0)
    return r


def test_new_files_make_one_partition_and_one_run_then_nothing(res, home, instance):
    sensor = build_new_stage_files_sensor()
    stage = home / "stage"
    for name in ODD_NAMES:
        drop(stage, f"uploads/{name}")
    drop(stage, "uploads/notes.txt")  # not audio: ignored
    result = tick(res, instance, sensor=sensor, add_partitions=False)
    assert len(result.run_requests) == 1
    key = result.run_requests[0].partition_key
    assert result.run_requests[0].run_key == key and key.startswith("drop-")
    assert result.dynamic_partitions_requests[0].partition_keys == [key]
    rows = res["store"].query("SELECT file_path, batch_key, source FROM audio_files ORDER BY 1")
    assert sorted(r[0] for r in rows) == sorted(f"uploads/{n}" for n in ODD_NAMES)
    assert {(r[1], r[2]) for r in rows} == {(key, "stage")}
    assert json.loads(result.cursor)["watermark"]

    instance.add_dynamic_partitions(transcript_batches.name, [key])
    again = tick(res, instance, cursor=result.cursor, sensor=sensor, add_partitions=False)
    assert again.run_requests == [] and again.dynamic_partitions_requests == []
    assert res["store"].query("SELECT count(*) FROM audio_files") == [(len(ODD_NAMES),)]

    # One more file later: a second batch with just that file.
    drop(stage, "uploads/later.flac")
    third = tick(res, instance, cursor=again.cursor, sensor=sensor, add_partitions=False)
    assert len(third.run_requests) == 1 and third.run_requests[0].partition_key != key
    assert res["store"].query(
        "SELECT file_path FROM audio_files WHERE batch_key = $k",
        {"k": third.run_requests[0].partition_key},
    ) == [("uploads/later.flac",)]


def test_files_registered_by_librispeech_ingest_are_not_registered_again(res, home, instance):
    assert dg.materialize(
        build_definitions(res).assets,
        selection=["librispeech_audio"],
        partition_key="sample",
        resources=res,
        instance=instance,
    ).success
    result = tick(res, instance, add_partitions=False)
    assert result.run_requests == []
    assert res["store"].query("SELECT DISTINCT batch_key FROM audio_files") == [
        ("librispeech-sample",)
    ]


def test_twelve_thousand_files_with_cap_5000_make_three_batches(res, home, instance):
    stage = home / "stage" / "bulk"
    stage.mkdir(parents=True)
    for i in range(12_000):
        (stage / f"f{i:05d}.wav").write_bytes(b"x")
    res["new_files"] = NewFilesSettings(min_age_s=0, max_files_per_batch=5000)
    result = tick(res, instance, add_partitions=False)
    keys = [r.partition_key for r in result.run_requests]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert result.dynamic_partitions_requests[0].partition_keys == keys
    counts = dict(res["store"].query("SELECT batch_key, count(*) FROM audio_files GROUP BY 1"))
    assert [counts[k] for k in keys] == [5000, 5000, 2000]


def test_young_files_wait_for_the_next_tick(res, home, instance):
    res["new_files"] = NewFilesSettings(min_age_s=60)
    drop(home / "stage", "a.flac")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    found = discover_new_files(res["stage"], res["store"], ScanCursor(), res["new_files"], now)
    assert found.batches == {}
    later = discover_new_files(
        res["stage"], res["store"], found.cursor, res["new_files"], now + dt.timedelta(seconds=120)
    )
    assert [p for paths in later.batches.values() for p in paths] == ["a.flac"]


def test_stranded_batch_from_a_dead_tick_is_re_emitted(res, home, instance):
    drop(home / "stage", "x.flac")
    # A tick that registered its files and then died: no partition, no cursor.
    found = discover_new_files(res["stage"], res["store"], ScanCursor(), res["new_files"])
    (key,) = found.batches
    result = tick(res, instance, add_partitions=False)
    assert [r.partition_key for r in result.run_requests] == [key]
    assert result.dynamic_partitions_requests[0].partition_keys == [key]


def test_schedule_registers_and_requests_like_the_sensor(res, home, instance):
    drop(home / "stage", "s.flac")
    ctx = dg.build_schedule_context(instance=instance, resources=res)
    requests = transcribe_new_files_schedule(ctx)
    assert len(requests) == 1
    assert instance.get_dynamic_partitions(transcript_batches.name) == [requests[0].partition_key]


def test_sensor_is_running_by_default_and_targets_the_job():
    defs = build_definitions(make_resources(SAMPLE_TREE.parent / "unused"))
    sensor = defs.get_sensor_def("new_stage_files_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 60
    assert sensor.job_name == "transcribe_new_files"
    schedule = defs.get_schedule_def("transcribe_new_files_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


# ------------------------------------------------------------------ bounded ticks, resumed
def tick_until_done(res, instance, cursor=None, max_ticks=50):
    """Tick as the daemon does (partitions added after each tick) until a pass ends."""
    sensor = build_new_stage_files_sensor()
    results = []
    for _ in range(max_ticks):
        result = tick(res, instance, cursor, sensor=sensor, add_partitions=False)
        keys = [r.partition_key for r in result.run_requests]
        instance.add_dynamic_partitions(transcript_batches.name, keys)
        results.append(result)
        cursor = result.cursor
        if "pass" not in json.loads(cursor):
            return results
    raise AssertionError("the pass never ended")


def bulk(stage, folders=5, per_folder=5):
    names = []
    for f in range(folders):
        for i in range(per_folder):
            names.append(drop(stage, f"bulk/spk{f}/u{i:02d}.flac").relative_to(stage).as_posix())
    return names


def test_a_backlog_is_registered_over_bounded_ticks_each_file_in_one_batch(res, home, instance):
    names = bulk(home / "stage")
    res["new_files"] = NewFilesSettings(min_age_s=0, max_files_per_tick=4, max_files_per_batch=3)
    results = tick_until_done(res, instance)
    assert len(results) >= 5  # 25 files, at most a folder past 4 files per tick
    positions = [json.loads(r.cursor)["pass"]["after"] for r in results[:-1]]
    assert positions == sorted(positions)  # each tick went on where the last one stopped
    keys = [r.partition_key for result in results for r in result.run_requests]
    assert len(keys) == len(set(keys))
    rows = res["store"].query("SELECT file_path, batch_key FROM audio_files ORDER BY 1")
    assert [r[0] for r in rows] == sorted(names)  # every file once (file_path is the key)
    assert {r[1] for r in rows} == set(keys)  # every batch requested as a run
    assert max(n for (n,) in res["store"].query(
        "SELECT count(*) FROM audio_files GROUP BY batch_key")) <= 3  # fmt: skip


def test_a_tick_that_died_mid_pass_is_resumed_and_its_batch_re_emitted(res, home, instance):
    bulk(home / "stage", folders=3, per_folder=4)
    res["new_files"] = NewFilesSettings(min_age_s=0, max_files_per_tick=4)
    sensor = build_new_stage_files_sensor()
    first = tick(res, instance, sensor=sensor, add_partitions=False)
    instance.add_dynamic_partitions(
        transcript_batches.name, [r.partition_key for r in first.run_requests]
    )
    # The next tick registers its files and dies before returning: no partition, no cursor.
    dead = discover_new_files(
        res["stage"], res["store"], ScanCursor.parse(first.cursor), res["new_files"]
    )
    (dead_key,) = dead.batches
    retry = tick(
        res, instance, first.cursor, sensor=sensor, add_partitions=False
    )  # the cursor the dead tick started from
    keys = [r.partition_key for r in retry.run_requests]
    assert keys[0] == dead_key and dead_key not in keys[1:]  # re-emitted, once
    instance.add_dynamic_partitions(transcript_batches.name, keys)
    rest = tick_until_done(res, instance, retry.cursor)
    keys += [r.partition_key for result in rest for r in result.run_requests]
    rows = res["store"].query("SELECT batch_key, count(*) FROM audio_files GROUP BY 1")
    first_keys = {r.partition_key for r in first.run_requests}
    assert sum(n for _, n in rows) == 12 and {k for k, _ in rows} == set(keys) | first_keys


def test_a_cursor_of_the_earlier_version_still_works(res, home, instance):
    drop(home / "stage", "old/a.flac")
    old = json.dumps({"watermark": "2020-01-01T00:00:00", "ticks": 3})
    result = tick(res, instance, cursor=old, add_partitions=False)
    assert len(result.run_requests) == 1
    assert json.loads(result.cursor)["ticks"] == 4


def test_ticks_cost_what_is_new_not_what_is_there(res, home, instance, monkeypatch):
    names = bulk(home / "stage")
    # Registered over ticks that stop inside folders (lookups of 2 files, 3 files a tick).
    monkeypatch.setattr(sensors, "LOOKUP_CHUNK", 2)
    res["new_files"] = NewFilesSettings(min_age_s=0, max_files_per_tick=3)
    first = tick_until_done(res, instance)[-1]
    import time

    time.sleep(1.1)  # the folders' times settle (trusted a second on)
    settled = tick_until_done(res, instance, first.cursor)[-1]
    # Inside the overlap window: listed folders are remembered, not looked up again.
    found = discover_new_files(
        res["stage"], res["store"], ScanCursor.parse(settled.cursor), res["new_files"]
    )
    assert found.scanned == 0 and found.batches == {}
    # A full pass: folders whose digest matches the manifest's cost no lookup.
    cursor = found.cursor
    cursor.ticks = 0
    full = discover_new_files(res["stage"], res["store"], cursor, res["new_files"])
    assert full.scanned == 0 and full.batches == {}
    # One new file: only its folder is opened, only it is looked up.
    drop(home / "stage", "bulk/spk2/new.flac")
    found = discover_new_files(res["stage"], res["store"], full.cursor, res["new_files"])
    assert [p for paths in found.batches.values() for p in paths] == ["bulk/spk2/new.flac"]
    assert found.scanned <= 1 + sum(n.startswith("bulk/spk2/") for n in names)
