"""A dirty stage: odd names, clutter, links, changed and corrupt files, a locked warehouse.

Real local stage folders, real DuckDB files, real FLACs; sensors ticked with build_sensor_context.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time

import dagster as dg
import numpy as np
import pytest

from audio_pipeline.definitions import ASSETS
from audio_pipeline.sensors import NewFilesSettings, ScanCursor
from audio_pipeline.transcription import librispeech
from audio_pipeline.transcription.pipeline import decode_batch
from audio_pipeline.transcription.sinks import DuckDBSink
from audio_pipeline.transcription.sources import LocalFolderSource

from .helpers import SAMPLE_TREE, make_resources, tick

FLACS = sorted(SAMPLE_TREE.glob("*/*/*.flac"))
NON_UTF8 = b"drop/\xff\xfe-name.flac"


def decode(root, paths):
    """The payload's decode step on ``paths`` (no Ray): ``{path: (error, content_md5)}``."""
    out = decode_batch(
        {
            "file_path": np.array(paths, dtype=object),
            "batch_key": np.array(["b"] * len(paths), dtype=object),
            "content_version": np.array([1] * len(paths)),
        },
        {"kind": "local", "root": str(root)},
        max_file_bytes=1 << 30,
        max_duration_s=3600,
    )
    return {
        p: (e, m) for p, e, m in zip(paths, out["decode_error"], out["content_md5"], strict=True)
    }


@pytest.fixture
def res(home):
    r = make_resources(home)
    r["new_files"] = NewFilesSettings(min_age_s=0)
    return r


def test_a_name_that_is_not_utf8_gets_its_own_row_and_never_stops_a_tick(res, home, instance):
    stage = home / "stage"
    (stage / "drop").mkdir(parents=True)
    shutil.copyfile(FLACS[0], os.path.join(os.fsencode(stage), NON_UTF8))
    shutil.copyfile(FLACS[1], stage / "drop" / "fine.flac")
    result = tick(res, instance)
    (request,) = result.run_requests
    rows = res["store"].query("SELECT file_path, batch_key FROM audio_files ORDER BY 1")
    assert rows == [
        ("drop/\\xff\\xfe-name.flac", request.partition_key),
        ("drop/fine.flac", request.partition_key),
    ]
    # The payload finds the file behind the escaped name and reads the real audio.
    decoded = decode(stage, ["drop/\\xff\\xfe-name.flac"])
    error, md5 = decoded["drop/\\xff\\xfe-name.flac"]
    assert error == ""
    assert md5 == hashlib.md5(FLACS[0].read_bytes()).hexdigest()
    again = tick(res, instance, cursor=result.cursor)
    assert again.run_requests == []


def test_macos_resource_forks_and_hidden_files_are_not_registered(res, home, instance):
    stage = home / "stage" / "drop"
    stage.mkdir(parents=True)
    for name in ("a.flac", "._a.flac", ".hidden.flac", ".Trashes/t.flac", ".tmp-1-x.flac"):
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FLACS[0], stage / name)
    os.mkfifo(stage / "pipe.flac")  # not a regular file: reading it would block forever
    tick(res, instance)
    assert res["store"].query("SELECT file_path FROM audio_files") == [("drop/a.flac",)]


def test_a_dangling_symlink_gets_an_accurate_message(res, home, instance, tmp_path):
    stage = home / "stage"
    stage.mkdir(parents=True)
    (stage / "gone.flac").symlink_to(stage / "never-there.flac")
    outside = tmp_path / "outside.flac"
    shutil.copyfile(FLACS[0], outside)
    (stage / "out.flac").symlink_to(outside)
    shutil.copyfile(FLACS[0], stage / "real.flac")
    (stage / "inside.flac").symlink_to(stage / "real.flac")
    tick(res, instance)
    registered = sorted(r[0] for r in res["store"].query("SELECT file_path FROM audio_files"))
    assert registered == ["gone.flac", "inside.flac", "out.flac", "real.flac"]
    decoded = decode(stage, registered)
    assert "dangling symbolic link" in decoded["gone.flac"][0]
    assert "never-there.flac" in decoded["gone.flac"][0]
    assert "outside the stage" not in decoded["gone.flac"][0]
    assert "outside the stage" in decoded["out.flac"][0]
    assert decoded["inside.flac"][0] == "" and decoded["real.flac"][0] == ""
    with pytest.raises(FileNotFoundError, match="no longer in the stage"):
        LocalFolderSource(stage).read_bytes("deleted.flac")


def transcript(path, version, md5, status="ok", text="old text"):
    return {
        "file_path": path,
        "model_id": "m",
        "engine": "e",
        "status": status,
        "error": None if status == "ok" else "broken",
        "text": text if status == "ok" else None,
        "duration_s": 1.0,
        "run_id": "r",
        "batch_key": "b",
        "transcribed_at": dt_now(),
        "content_version": version,
        "content_md5": md5,
    }


def dt_now():
    import datetime as dt

    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def test_a_changed_file_is_a_new_content_version_in_a_new_batch(res, home, instance):
    stage = home / "stage"
    stage.mkdir(parents=True)
    target = stage / "a.flac"
    shutil.copyfile(FLACS[0], target)
    shutil.copyfile(FLACS[1], stage / "b.flac")
    first = tick(res, instance)
    (key1,) = [r.partition_key for r in first.run_requests]
    store = res["store"]
    sink = DuckDBSink(store.path)
    old_md5 = hashlib.md5(target.read_bytes()).hexdigest()
    sink.merge_transcripts([transcript("a.flac", 1, old_md5), transcript("b.flac", 1, "x")])
    # The payload's hashes reach the manifest; nothing is pending any more.
    assert store.query("SELECT content_md5 FROM audio_files WHERE file_path = 'a.flac'") == [
        (old_md5,)
    ]
    assert store.pending_files([key1], "m") == []

    shutil.copyfile(FLACS[2], target)  # overwritten in place with other audio
    os.utime(target, (time.time() - 30, time.time() - 30))  # e.g. `cp -p`: an older time
    # In-place writes leave the folder's time alone: the periodic full rescan finds them.
    cursor = ScanCursor.parse(first.cursor)
    cursor.ticks = 0
    second = tick(res, instance, cursor=cursor.dump())
    (key2,) = [r.partition_key for r in second.run_requests]
    assert key2 != key1
    assert store.query(
        "SELECT batch_key, content_version, content_md5, previous_md5, changed_at IS NOT NULL "
        "FROM audio_files WHERE file_path = 'a.flac'"
    ) == [(key2, 2, None, old_md5, True)]
    (pending,) = store.pending_files([key2], "m")
    assert (pending.file_path, pending.content_version) == ("a.flac", 2)
    # Until the new content is transcribed, the old row does not count for the batch.
    assert store.batch_report([key2], "m").missing == ["a.flac"]

    new_md5 = hashlib.md5(target.read_bytes()).hexdigest()
    # A late row of the old content never replaces the new one; an error on the new content
    # does replace the stale ok row.
    sink.merge_transcripts([transcript("a.flac", 2, new_md5, status="error")])
    sink.merge_transcripts([transcript("a.flac", 1, old_md5, text="late")])
    assert store.query(
        "SELECT status, content_version, content_md5 FROM transcripts WHERE file_path = 'a.flac'"
    ) == [("error", 2, new_md5)]
    assert store.query("SELECT content_md5 FROM audio_files WHERE file_path = 'a.flac'") == [
        (new_md5,)
    ]
    assert store.pending_files([key2], "m") == []
    assert store.pending_files([key2], "m", retry_errors=True)[0].content_version == 2
    # A third tick sees nothing new.
    assert tick(res, instance, cursor=second.cursor).run_requests == []


def test_files_ingested_from_librispeech_are_not_seen_as_changed(res, home, instance):
    assert dg.materialize(
        ASSETS,
        selection=["librispeech_audio"],
        partition_key="sample",
        resources=res,
        instance=instance,
    ).success
    assert tick(res, instance).run_requests == []
    assert res["store"].query(
        "SELECT count(*), count(last_modified), max(content_version) FROM audio_files"
    ) == [(22, 22, 1)]


def test_one_corrupt_flac_and_clutter_never_fail_an_ingest(home, instance, sample_copy):
    tree = sample_copy.rename(sample_copy.with_name("dev-clean"))  # a mirror's subset
    chapter = tree / "1001" / "128104"
    (chapter / "1001-128104-0003.flac").write_bytes(b"fLaC\x00 this is not audio")
    (chapter / "._1001-128104-0000.flac").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (chapter / "._1001-128104.trans.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe")
    res = make_resources(home, mirror=str(tree.parent.parent))
    result = dg.materialize(
        ASSETS, selection=["librispeech_audio"], partition_key="dev-clean", resources=res,
        instance=instance, raise_on_error=False,
    )  # fmt: skip
    assert result.success
    meta = result.asset_materializations_for_node("librispeech_audio")[0].metadata
    assert meta["files"].value == 22 and meta["unreadable_headers"].value == 1
    assert meta["references"].value == 22
    paths = {r[0] for r in res["store"].query("SELECT file_path FROM audio_files")}
    assert "dev-clean/1001/128104/1001-128104-0003.flac" in paths
    assert not any("/._" in p for p in paths)
    staged = {f.path for f in res["stage"].list_files()}
    assert staged == paths
    # The asset's rows are the shared builder's rows (the ingest job uses the same builder).
    built = librispeech.build_manifest(tree, "librispeech-dev-clean")
    assert res["store"].query(
        "SELECT file_path, size_bytes, content_md5, batch_key, source FROM audio_files ORDER BY 1"
    ) == [
        (r["file_path"], r["size_bytes"], r["content_md5"], r["batch_key"], r["source"])
        for r in built.files
    ]


def hold_read_only(path):
    code = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
        "print('open', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "open"
    return proc


@pytest.mark.waits
@pytest.mark.slow  # a subprocess
def test_a_locked_warehouse_fails_the_tick_fast_naming_the_holder(res, home, instance):
    res["store"].ensure_tables()
    (home / "stage").mkdir(parents=True)
    shutil.copyfile(FLACS[0], home / "stage" / "a.flac")
    res["store"] = res["store"].model_copy(update={"tick_lock_timeout_s": 2.0})
    reader = hold_read_only(res["store"].path)  # a read-only reader left open
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match="warehouse is busy") as failure:
            tick(res, instance)
        assert time.monotonic() - started < 15  # not the 60 s sensor timeout
        message = str(failure.value)
        assert f"PID {reader.pid}" in message and "read_only=True" in message
    finally:
        reader.kill()
        reader.wait()
    assert len(tick(res, instance).run_requests) == 1  # the next tick goes through
