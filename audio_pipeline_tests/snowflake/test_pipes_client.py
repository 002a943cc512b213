"""PipesSnowflakeMLJobClient against a stand-in for ``snowflake.ml.jobs`` (see conftest).

The test double sits only at the SDK boundary (``submit_directory`` and ``MLJob``): the payload
really runs (in a subprocess), really speaks Dagster Pipes on stdout, and the client really
reads it back through ``get_logs()``.
"""

from __future__ import annotations

import inspect
import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from audio_pipeline.resources.pipes_snowflake import (
    PipesMLJobLogMessageReader,
    PipesSnowflakeMLJobClient,
)

from .conftest import SECRET

PAYLOAD = """
import os, sys, time
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    mode = pipes.get_extra("mode")
    print("plain line from the payload", flush=True)
    pipes.log.info("hello through pipes")
    if mode == "fail":
        print("about to fail", flush=True)
        raise ValueError("boom in the payload")
    if mode == "sleep":
        print("sleeping", flush=True)
        time.sleep(120)
    pipes.report_asset_materialization(
        metadata={
            "rows": pipes.get_extra("n") * 14,
            "jobs_count": int(os.environ["SNOWFLAKE_JOBS_COUNT"]),
            "password_env": os.environ.get("SNOWFLAKE_PASSWORD", "absent"),
        }
    )
"""


@pytest.fixture
def payload_dir(tmp_path) -> Path:
    d = tmp_path / "payload"
    d.mkdir()
    (d / "main.py").write_text(PAYLOAD)
    return d


def remote_asset(payload_dir: Path, client: PipesSnowflakeMLJobClient, extras: dict):
    @dg.asset
    def remote(context):
        invocation = client.run(
            context=context,
            dir_path=str(payload_dir),
            compute_pool="AUDIO_POOL",
            entrypoint="main.py",
            stage_name="JOB_STAGE",
            session=None,
            extras=extras,
            target_instances=3,
            external_access_integrations=["EAI"],
            query_warehouse="WH",
            name="REMOTE_TEST",
        )
        result = invocation.get_materialize_result()
        return dg.MaterializeResult(metadata={**result.metadata, **invocation.metadata})

    return remote


def test_payload_metadata_arrives_in_materialization(
    fake_ml_jobs, payload_dir, monkeypatch, capsys, instance
):
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", SECRET)  # in Dagster's env: must not reach the job
    client = PipesSnowflakeMLJobClient(poll_interval_s=0.1)
    result = dg.materialize(
        [remote_asset(payload_dir, client, {"mode": "ok", "n": 3})], instance=instance
    )
    assert result.success
    meta = result.asset_materializations_for_node("remote")[0].metadata
    assert meta["rows"].value == 42
    assert meta["jobs_count"].value == 3
    assert meta["password_env"].value == "absent"
    assert meta["snowflake_ml_job_id"].value == "DB.SCH.REMOTE_TEST_1"
    assert meta["snowflake_ml_job_status"].value == "DONE"
    call = fake_ml_jobs.submissions[0]
    assert call["compute_pool"] == "AUDIO_POOL" and call["min_instances"] == 3
    assert call["external_access_integrations"] == ["EAI"]
    assert "DAGSTER_PIPES_CONTEXT" in call["env_vars"]
    assert "DAGSTER_PIPES_MESSAGES" in call["env_vars"]
    assert SECRET not in repr(call)
    # plain lines are forwarded (to stdout: the step's compute log), each exactly once
    out = capsys.readouterr().out
    assert out.count("plain line from the payload") == 1
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert sum("hello through pipes" in m for m in messages) == 1  # Pipes log → Dagster log
    assert any("submitted Snowflake ML Job DB.SCH.REMOTE_TEST_1" in m for m in messages)
    assert not any(SECRET in m for m in messages)


def test_failing_payload_fails_materialization_with_log_tail(fake_ml_jobs, payload_dir):
    client = PipesSnowflakeMLJobClient(poll_interval_s=0.1)
    result = dg.materialize(
        [remote_asset(payload_dir, client, {"mode": "fail", "n": 1})], raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.step_failure_data.error)
    assert "ended FAILED" in text
    assert "about to fail" in text
    assert "ValueError: boom in the payload" in text
    assert result.asset_materializations_for_node("remote") == []


def test_timeout_cancels_the_job(fake_ml_jobs, payload_dir):
    client = PipesSnowflakeMLJobClient(poll_interval_s=0.1, timeout_s=1.5)
    started = time.monotonic()
    result = dg.materialize(
        [remote_asset(payload_dir, client, {"mode": "sleep", "n": 1})], raise_on_error=False
    )
    assert time.monotonic() - started < 30
    assert not result.success
    job = fake_ml_jobs.jobs[0]
    assert job.cancel_calls == 1 and job.status == "CANCELLED"
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.step_failure_data.error)
    assert "did not finish within 2 s and was cancelled" in text
    assert "sleeping" in text


def test_terminating_the_run_cancels_the_job(fake_ml_jobs, payload_dir):
    """A SIGINT during the step is how Dagster interrupts a run in process; the job is cancelled."""
    client = PipesSnowflakeMLJobClient(poll_interval_s=0.1)

    def interrupt_when_running():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs = fake_ml_jobs.jobs
            if jobs and "sleeping" in jobs[0].get_logs():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=interrupt_when_running, daemon=True)
    thread.start()
    result = dg.materialize(
        [remote_asset(payload_dir, client, {"mode": "sleep", "n": 1})], raise_on_error=False
    )
    thread.join(5)
    assert not result.success
    job = fake_ml_jobs.jobs[0]
    assert job.cancel_calls == 1
    assert job.status == "CANCELLED"


def test_reader_forwards_only_new_complete_lines():
    class Handler:
        def __init__(self):
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    reader = PipesMLJobLogMessageReader(tail_lines=2)
    handler = Handler()
    msg = '{"__dagster_pipes_version": "0.1", "method": "log", "params": {}}'
    with reader.read_messages(handler):
        assert reader.consume(f"a\n{msg}\npartial") == 2
        assert reader.consume(f"a\n{msg}\npartial line\nb\n") == 2
        assert reader.consume(f"a\n{msg}\npartial line\nb\n") == 0
    assert handler.messages == [{"__dagster_pipes_version": "0.1", "method": "log", "params": {}}]
    assert reader.tail == "partial line\nb"


def test_submit_kwargs_bind_to_installed_submit_directory():
    """Our kwargs against the real ``snowflake.ml.jobs.submit_directory`` signature (2.6)."""
    from snowflake.ml.jobs import manager

    from audio_pipeline.resources.compute import SnowflakeMLJobCompute
    from audio_pipeline.resources.snowflake_connection import SnowflakeConnection

    compute = SnowflakeMLJobCompute(connection=SnowflakeConnection(connection_name="x"))
    args = compute.submit_args("audio_pipeline.transcription", "abcd-1234-ef")
    kwargs = PipesSnowflakeMLJobClient.submit_kwargs(
        dir_path="/tmp/payload", session=None, **(args | {"env_vars": {"A": "1"}})
    )
    sig = inspect.signature(manager.submit_directory)
    bound = sig.bind(**kwargs)
    named = set(sig.parameters) - {"kwargs"}
    extra = set(bound.arguments.get("kwargs", {}))
    assert extra == {
        "min_instances",
        "env_vars",
        "query_warehouse",
        "name",
        "database",
        "schema",
    }
    doc = manager.submit_directory.__doc__
    for key in extra:  # every **kwargs key is one the SDK documents
        assert f"{key} (" in doc, key
    assert {"compute_pool", "entrypoint", "stage_name", "target_instances"} <= named
    assert kwargs["compute_pool"] == "AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES"
    assert kwargs["stage_name"] == "JOB_STAGE"
    assert kwargs["entrypoint"] == "run_payload.py"
    assert kwargs["args"] == ["audio_pipeline.transcription"]
    assert kwargs["target_instances"] == 5 and kwargs["min_instances"] == 1
    assert kwargs["external_access_integrations"] == ["AUDIO_PIPELINE_ACCESS_INTEGRATION"]
    assert kwargs["name"] == "TRANSCRIPTS_ABCD1234EF"
    assert kwargs["query_warehouse"] == "ML_MODEL_WH"
