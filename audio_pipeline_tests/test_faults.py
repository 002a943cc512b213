"""Faults: a locked DuckDB file, a Ray worker killed mid-job."""

import subprocess
import sys
import time

import pytest

from audio_pipeline.transcription.sinks import DuckDBLockedError, DuckDBSink

from .helpers import (
    LOOPBACK,
    listening_addresses,
    make_resources,
    sensor_batches,
    stage_sample,
    start_transcription,
)


def hold_lock(path, seconds):
    code = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(float(sys.argv[2]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow  # a subprocess
def test_locked_duckdb_gives_a_clear_error_then_retries_through(tmp_path):
    path = tmp_path / "w.duckdb"
    DuckDBSink(path).ensure_tables()
    holder = hold_lock(path, 4)
    try:
        started = time.monotonic()
        with pytest.raises(DuckDBLockedError, match=r"stayed locked by PID \d+ .* for 1 s"):
            DuckDBSink(path, lock_timeout_s=1).pending_files(["b"], "m")
        assert time.monotonic() - started < 3
        # A patient sink waits for the other process and then works.
        assert DuckDBSink(path, lock_timeout_s=30).pending_files(["b"], "m") == []
        assert time.monotonic() - started >= 3
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_ray_worker_killed_mid_job_is_restarted_and_every_file_lands_once(
    home, instance, ray_compute
):
    from ray.util.state import list_actors

    res = make_resources(home, ray_compute=ray_compute)
    stage_sample(home, short_only=True)
    (key,) = sensor_batches(res, instance, cap=5000)
    thread, outcome = start_transcription(res, instance, key)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        if res["store"].query("SELECT count(*) FROM transcripts")[0][0] >= 4:
            actors = list_actors(
                address=ray_compute.dashboard_url, filters=[("state", "=", "ALIVE")]
            )
            workers = [a for a in actors if "Transcriber" in (a.class_name or "")]
            for actor in workers:
                # The worker process of the Whisper actor: this test's own Ray cluster.
                subprocess.run(["kill", "-9", str(actor.pid)], check=False)
                killed = actor.pid
        time.sleep(0.2)
    thread.join(timeout=300)
    assert killed, "no Whisper actor was found to kill"
    result = outcome["result"]
    assert result.success, "the job should survive the loss of a worker"
    meta = result.asset_materializations_for_node("transcripts")[0].metadata
    assert meta["files"].value == 21 and meta["ok"].value == 21
    assert res["store"].query("SELECT count(*), count(DISTINCT file_path) FROM transcripts") == [
        (21, 21)
    ]


@pytest.mark.slow
def test_ray_head_listens_on_loopback_only(ray_compute):
    nodes = ray_compute._nodes()
    assert [n["node_ip"] for n in nodes] == ["127.0.0.1"]
    listening = listening_addresses(int(ray_compute.head.pid_file.read_text()))
    assert listening, "the Ray head should listen on some port"
    assert {addr.ip for addr in listening} <= LOOPBACK, listening
    assert any(addr.port == ray_compute.dashboard_port for addr in listening)


@pytest.mark.slow  # subprocesses
def test_a_head_that_fails_to_start_leaves_no_process_and_no_temp_dir(tmp_path):
    """``ray start`` gives up (here a stand-in for the ``ray`` command, which exits with an
    error after starting a child and writing in the head's temp dir, as a GCS would): the
    child's whole group is stopped and the temp dir removed; the log stays for the reader."""
    from audio_pipeline.resources.compute.base import ComputePoolError
    from audio_pipeline.resources.compute.ray_head import RayHead, free_port
    from audio_pipeline.run_health import process_alive

    fake_ray = tmp_path / "ray"
    fake_ray.write_text(
        "#!/bin/sh\n"
        'sleep 300 & echo $! > "$PIDS"\n'
        'echo session > "$TMPDIR/session"\n'
        "echo 'the GCS could not start' >&2\n"
        "exit 1\n"
    )
    fake_ray.chmod(0o755)
    pids = tmp_path / "pids"
    head = RayHead(
        state_dir=tmp_path / "state", gcs_port=free_port(), dashboard_port=free_port(),
        ray_bin=str(fake_ray), start_timeout_s=30,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIDS", str(pids))
        with pytest.raises(ComputePoolError, match="the GCS could not start"):
            head.start()
    child = int(pids.read_text())
    deadline = time.monotonic() + 10
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(child)
    assert not head.temp_dir.exists() and not head.pid_file.exists()
