"""End to end on the Snowflake profile against the emulated account (tools/snowflake_emulator).

The real definitions (``audio_pipeline.definitions`` assets with the ``snowflake`` profile's
resources, read from the environment as in production) run on an account whose only fake is its
SQL/REST endpoint: the connector, Snowpark, ``snowflake.ml.jobs`` and the wheel's job launcher run
unchanged, and the job attaches to a three-node Ray cluster (each node one logical GPU, the third
joining late). The model is the bundled tiny.en (no network here); the rest is the production
configuration except the pool size (3 nodes, all required to start).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import dagster as dg
import pytest

from audio_pipeline.profiles import resources_for
from audio_pipeline.resources.compute import SnowflakeMLJobCompute
from audio_pipeline.transcription.librispeech import BUNDLED_ROOT

from .. import helpers
from ..helpers import account_connection

pytestmark = pytest.mark.slow

SAMPLE = BUNDLED_ROOT / "sample"
MODEL = {"model": "bundled:tiny.en", "engine": "ctranslate2"}


def account_env(account, connection, home) -> dict:
    return {
        "AUDIO_PIPELINE_PROFILE": "snowflake",
        "AUDIO_PIPELINE_HOME": str(home),
        "SNOWFLAKE_ACCOUNT": "emulated",
        "SNOWFLAKE_USER": "fake",
        "SNOWFLAKE_PASSWORD": "snow",
        "SNOWFLAKE_HOST": "127.0.0.1",
        "SNOWFLAKE_PORT": str(account.port),
        "SNOWFLAKE_PROTOCOL": "http",
        "SNOWFLAKE_DATABASE": connection.database,
        "SNOWFLAKE_SCHEMA": connection.schema_name,
        "SNOWFLAKE_WAREHOUSE": connection.warehouse,
        "LIBRISPEECH_MIRROR": str(home / "mirror"),
    }


@pytest.fixture(scope="module")
def deployment(emulated_account, job_cluster, tmp_path_factory):
    """The definitions' assets and resources as the snowflake profile builds them, on the
    emulated account set up by the real setup plan."""
    from audio_pipeline.definitions import ASSETS

    home = tmp_path_factory.mktemp("sfhome")
    # a LibriSpeech-layout mirror: LibriSpeech/dev-clean/<speaker>/<chapter>/... (one speaker of
    # the sample: a second partition for the backfill, smaller than the first)
    shutil.copytree(SAMPLE / "1001", home / "mirror" / "LibriSpeech" / "dev-clean" / "1001")
    connection = account_connection(emulated_account, target_instances=3, min_instances=3)
    env = account_env(emulated_account, connection, home)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        resources = resources_for("snowflake", env)
        # resources are rebuilt from their constructor arguments: build it anew, not model_copy
        resources["compute"] = SnowflakeMLJobCompute(
            connection=resources["compute"].connection,
            target_instances=3,
            min_instances=3,
            poll_interval_s=0.5,
            # a failed job whose head died waits a quarter of this for its closed message
            drain_timeout_s=20.0,
            home=str(home / "container"),
        )
        with dg.instance_for_test() as instance:
            yield {
                "assets": ASSETS,
                "resources": resources,
                "instance": instance,
                "account": emulated_account,
                "cluster": job_cluster["cluster"],
                "connection": connection,
                "home": home,
            }
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def materialize(d, selection, partition_key=None, config=None, tags=None):
    if selection == "transcripts":
        # jobs wait for three nodes: the third joins now, while the first job waits (once)
        d["cluster"].join_late()
    return helpers.materialize(
        selection, d["resources"], d["instance"], partition_key, config, tags, d["assets"]
    )


def store_rows(d, sql):
    with d["connection"].connect() as conn:
        return conn.cursor().execute(sql).fetchall()


def new_jobs(d, before):
    return [j for k, j in d["account"].jobs.items() if k not in before]


@pytest.fixture(scope="module")
def sample_ingest(deployment):
    """The sample subset ingested once: every transcription below reads its partition."""
    ingest = materialize(deployment, "librispeech_audio", "sample")
    assert ingest.success
    return ingest


def test_sample_through_ingest_pool_and_transcripts(deployment, sample_ingest):
    d = deployment
    ingest = sample_ingest
    assert helpers.metadata(ingest, "librispeech_audio")["files"] == 22

    pool = materialize(d, "transcription_compute_pool")
    assert pool.success
    pool_meta = helpers.metadata(pool, "transcription_compute_pool")
    assert pool_meta["pool"] == "AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES"
    assert pool_meta["created"] is False and pool_meta["altered"] == "nothing"
    # the pool role only DESCRIBEs: setup created it, and SYSADMIN holds USAGE and MONITOR
    pool_sql = [s for r, s in d["account"].statements if "COMPUTE POOL" in s.upper()]
    assert not [s for s in pool_sql[-3:] if s.upper().startswith(("CREATE", "ALTER"))]

    before = set(d["account"].jobs)
    run = materialize(d, "transcripts", "librispeech-sample", config=MODEL)
    (job,) = new_jobs(d, before)
    assert run.success, job.head.text()[-4000:]
    meta = helpers.metadata(run, "transcripts")  # reported by the payload through Pipes
    assert (meta["files"], meta["ok"], meta["errors"]) == (22, 22, 0)
    assert meta["wer_percent"] < 25
    assert meta["snowflake_ml_job_id"] == job.id
    assert meta["snowflake_ml_job_status"] == "DONE"
    checks = {e.check_name: e.passed for e in run.get_asset_check_evaluations()}
    assert set(checks) == {"completeness", "error_rate", "wer", "hallucinations"}
    rows = store_rows(d, "SELECT status, count(*) FROM TRANSCRIPTS GROUP BY 1 ORDER BY 1")
    assert rows == [("ok", 22)]
    # the launcher really ran: its banners are in the head's log, after the start-up noise
    log = job.head.text()
    assert log.index("Installing packages") < log.index("ML job started")
    assert job.target_instances == 3 and job.env["MLRS_SUBMITTED_TARGET_INSTANCES"] == "3"
    # one Whisper actor on each of the three nodes
    from ray.util.state import list_actors

    actors = list_actors(
        address=d["cluster"].compute.dashboard_url,
        detail=True,
        limit=1000,
        raise_on_missing_output=False,
    )
    whisper = [a for a in actors if "Transcriber" in (a.class_name or "")]
    nodes = {a.node_id for a in whisper if a.job_id and a.state in ("ALIVE", "DEAD")}
    assert len(nodes) == 3, [(a.class_name, a.node_id) for a in whisper]


def test_two_partition_backfill_is_one_ml_job(deployment, sample_ingest):
    d = deployment
    assert materialize(d, "librispeech_audio", "dev-clean").success
    before = set(d["account"].jobs)
    run = materialize(
        d,
        "transcripts",
        config=MODEL,
        tags={
            "dagster/asset_partition_range_start": "librispeech-sample",
            "dagster/asset_partition_range_end": "librispeech-dev-clean",
        },
    )
    jobs = new_jobs(d, before)
    assert len(jobs) == 1, [j.id for j in jobs]
    assert run.success, jobs[0].head.text()[-4000:]
    meta = helpers.metadata(run, "transcripts", "librispeech-dev-clean")
    dev_clean = len(list((d["home"] / "mirror").glob("LibriSpeech/dev-clean/*/*/*.flac")))
    assert meta["files"] == dev_clean == 8  # dev-clean's own figures (one per partition)
    assert store_rows(d, "SELECT count(*) FROM TRANSCRIPTS WHERE status = 'ok'") == [(30,)]


def test_a_sensor_tick_over_the_stage_directory_creates_a_partition_and_a_run(deployment):
    from audio_pipeline.definitions import build_definitions
    from audio_pipeline.sensors import NewFilesSettings

    d = deployment
    flac = sorted(SAMPLE.glob("*/*/*.flac"))[0]
    from audio_pipeline.resources.stage import SnowflakeStage

    # a user's upload: a PUT to the stage, outside the pipeline
    uploader = SnowflakeStage(connection=d["connection"])
    assert uploader.put_file(flac, "uploads/7777/1/7777-1-0001.flac")
    # files younger than min_age_s may still be being written: this one is complete
    resources = d["resources"] | {"new_files": NewFilesSettings(min_age_s=0)}
    defs = build_definitions(resources=resources, sensor_interval=30)
    sensor = defs.get_sensor_def("new_stage_files_sensor")
    with dg.build_sensor_context(instance=d["instance"], resources=resources) as context:
        tick = sensor(context)
    (request,) = tick.run_requests
    (added,) = tick.dynamic_partitions_requests
    assert request.partition_key in added.partition_keys
    d["instance"].add_dynamic_partitions("transcript_batches", list(added.partition_keys))
    before = set(d["account"].jobs)
    run = materialize(d, "transcripts", request.partition_key, config=MODEL, tags=request.tags)
    (job,) = new_jobs(d, before)
    assert run.success, job.head.text()[-4000:]
    assert helpers.metadata(run, "transcripts")["ok"] == 1
    assert store_rows(
        d, "SELECT status FROM TRANSCRIPTS WHERE file_path = 'uploads/7777/1/7777-1-0001.flac'"
    ) == [("ok",)]


def _when_running(d, before, action, timeout=240):
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = new_jobs(d, before)
            if jobs and jobs[0].status == "RUNNING" and "ML job started" in jobs[0].head.text():
                action(jobs[0])
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.waits
def test_terminating_the_run_cancels_the_job(deployment, sample_ingest):
    d = deployment
    before = set(d["account"].jobs)
    main = threading.get_ident()
    # a run's termination reaches the step as an interrupt (SIGINT/SIGTERM in the run worker)
    watcher = _when_running(d, before, lambda _job: signal.pthread_kill(main, signal.SIGINT))
    try:
        run = materialize(d, "transcripts", "librispeech-sample", config=MODEL | {"force": True})
    except KeyboardInterrupt:
        run = None
    watcher.join(timeout=5)
    (job,) = new_jobs(d, before)
    assert run is None or not run.success
    deadline = time.monotonic() + 60
    while job.status not in ("CANCELLED",) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.cancel_requested and job.status == "CANCELLED"
    cancels = [s for _r, s in d["account"].statements if "spcs_cancel_job" in s]
    assert any(job.id in s for s in cancels)


def test_a_failed_job_shows_a_worker_nodes_error(deployment, sample_ingest):
    d = deployment
    before = set(d["account"].jobs)
    message = "RayletError: node 127.0.0.1 died: CUDA error: an illegal memory access (Xid 79)"
    watcher = _when_running(
        d, before, lambda job: d["account"].fail_on_instance(job.id, 2, message)
    )
    run = materialize(d, "transcripts", "librispeech-sample", config=MODEL | {"force": True})
    watcher.join(timeout=5)
    (job,) = new_jobs(d, before)
    assert not run.success and job.status == "FAILED"
    failure = next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.event_specific_data.error.message) + str(
        failure.event_specific_data.error_display_string
    )
    assert "ended FAILED" in text
    assert "instance 2" in text and "illegal memory access" in text
