"""PipesSnowflakeMLJobClient on the emulated account (tools/snowflake_emulator): the real ML Jobs
SDK submits,
the wheel's launcher runs the payload, and the payload speaks Dagster Pipes through message
chunks on the job stage (transcription/pipes_stage.py).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import dagster as dg
import pytest

from audio_pipeline.resources.pipes_snowflake import PipesSnowflakeMLJobClient

from ..helpers import SECRET

PAYLOAD = """
import os, sys, time
from dagster_pipes import open_dagster_pipes
from audio_pipeline.transcription.pipes_stage import payload_message_writer

with open_dagster_pipes(message_writer=payload_message_writer()) as pipes:
    mode = pipes.get_extra("mode")
    n = pipes.get_extra("n")
    for i in range(n):
        for j in range(10):  # log noise between the messages: 10 lines per message
            print(f"noise {i:05d}-{j} " + "x" * 60, flush=j == 9)
        pipes.log.info(f"message {i:05d}")
    if mode == "fail":
        print("about to fail", flush=True)
        raise ValueError("boom in the payload")
    if mode == "sleep":
        print("sleeping", flush=True)
        time.sleep(300)
    pipes.report_asset_materialization(
        metadata={
            "sent": n,
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


def remote_asset(payload_dir: Path, client, connection, extras: dict, target_instances=1):
    database, schema = connection.schema_fqn

    @dg.asset
    def remote(context):
        with connection.snowpark_session() as session:
            invocation = client.run(
                context=context,
                dir_path=str(payload_dir),
                compute_pool="AUDIO_PROCESSING_CP_DATA_DOWNLOAD",
                entrypoint="main.py",
                stage_name=f"{database}.{schema}.JOB_STAGE",
                session=session,
                extras=extras,
                target_instances=target_instances,
                external_access_integrations=["AUDIO_PIPELINE_ACCESS_INTEGRATION"],
                query_warehouse=connection.warehouse,
                name="REMOTE_TEST",
                database=database,
                schema=schema,
            )
        result = invocation.get_materialize_result()
        return dg.MaterializeResult(metadata={**result.metadata, **invocation.metadata})

    return remote


def client(**kw) -> PipesSnowflakeMLJobClient:
    return PipesSnowflakeMLJobClient(poll_interval_s=0.3, message_interval_s=1.0, **kw)


def new_job(account, before):
    (job,) = [j for k, j in account.jobs.items() if k not in before]
    return job


def test_every_message_arrives_once_in_order_whatever_the_log_does(
    acct_connection, emulated_account, payload_dir, instance
):
    """1,000 Pipes messages among 10,000 log lines, 40 start-up lines before the launcher's
    banner, a 100 KB log cap, and the log source switching once the container is gone. Before
    the stage channel (messages counted from get_logs() lines) most of them were lost."""
    account = emulated_account
    account.logs_retained_s = 0.0  # container logs gone at once: the SDK reads !spcs_get_logs
    before = set(account.jobs)
    try:
        result = dg.materialize(
            [remote_asset(payload_dir, client(), acct_connection, {"mode": "ok", "n": 1000})],
            instance=instance,
            raise_on_error=False,
        )
    finally:
        account.logs_retained_s = None
    job = new_job(account, before)
    assert result.success, job.head.text()[-3000:]
    log = job.head.text()
    assert log.count("\nnoise ") >= 10_000 and len(log.encode()) > 600_000
    assert log.index("Installing packages") < log.index("ML job started")
    received = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if re.fullmatch(r"message \d{5}", e.user_message or "")
    ]
    assert received == [f"message {i:05d}" for i in range(1000)]
    meta = result.asset_materializations_for_node("remote")[0].metadata
    assert meta["sent"].value == 1000
    assert meta["jobs_count"].value == 1
    assert meta["password_env"].value == "absent"  # no secret reaches the job
    assert meta["snowflake_ml_job_status"].value == "DONE"
    assert SECRET not in log


def test_failing_payload_fails_with_every_instances_log_tail(
    acct_connection, emulated_account, payload_dir
):
    before = set(emulated_account.jobs)
    result = dg.materialize(
        [remote_asset(payload_dir, client(), acct_connection, {"mode": "fail", "n": 3})],
        raise_on_error=False,
    )
    job = new_job(emulated_account, before)
    assert not result.success and job.status == "FAILED"
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = failure.event_specific_data.error.message
    assert (
        "ended FAILED" in text and "boom in the payload" in text and "[instance 0 (head)]" in text
    )


@pytest.mark.waits
def test_timeout_cancels_the_job(acct_connection, emulated_account, payload_dir):
    before = set(emulated_account.jobs)
    result = dg.materialize(
        [
            remote_asset(
                payload_dir, client(timeout_s=8), acct_connection, {"mode": "sleep", "n": 1}
            )
        ],
        raise_on_error=False,
    )
    job = new_job(emulated_account, before)
    assert not result.success
    assert job.cancel_requested
    emulated_account.wait_idle(60)
    assert job.status == "CANCELLED"


@pytest.mark.waits
def test_messages_unreadable_past_the_error_window_cancel_the_job(
    acct_connection, emulated_account, payload_dir
):
    """The job's chunks cannot be read (every GET of them refused at the endpoint): a blip is
    retried, but past ``error_window_s`` the client gives up and the GPU job is cancelled."""
    refusal = emulated_account.refuse(r"^GET\s.*/pipes/", seconds=None)
    before = set(emulated_account.jobs)
    try:
        result = dg.materialize(
            [
                remote_asset(
                    payload_dir,
                    client(error_window_s=3),
                    acct_connection,
                    {"mode": "sleep", "n": 1},
                )
            ],
            raise_on_error=False,
        )
    finally:
        emulated_account.lift(refusal)
    job = new_job(emulated_account, before)
    assert not result.success and refusal.hits > 0
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "could not be read from" in failure.event_specific_data.error.to_string()
    assert job.cancel_requested
    emulated_account.wait_idle(60)
    assert job.status == "CANCELLED"


@pytest.mark.waits
def test_a_writer_cut_off_for_a_while_still_delivers_closed(
    acct_connection, emulated_account, payload_dir
):
    """Every PUT of the job's chunks refused for 6 s from the first one (a lost minute, scaled
    down through the writer's settings): the job still ends with ``closed`` and its
    materialization; nothing is lost."""
    refusal = emulated_account.refuse(r"^PUT\s.*/pipes/", seconds=6, from_first_hit=True)
    before = set(emulated_account.jobs)
    try:
        result = dg.materialize(
            [
                remote_asset(
                    payload_dir,
                    client(network_timeout_s=1, max_backoff_s=1),
                    acct_connection,
                    {"mode": "ok", "n": 5},
                )
            ],
            raise_on_error=False,
        )
    finally:
        emulated_account.lift(refusal)
    job = new_job(emulated_account, before)
    assert result.success, job.head.text()[-3000:]
    assert refusal.hits > 0
    assert "could not be uploaded" in job.head.text()
    meta = result.asset_materializations_for_node("remote")[0].metadata
    assert meta["sent"].value == 5


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
    assert kwargs["stage_name"] == "MULTINODE_MULTIGPU_MYDB.AUDIO_TRANSCRIPTION_SCH.JOB_STAGE"
    assert kwargs["entrypoint"] == "run_payload.py"
    assert kwargs["args"] == ["audio_pipeline.transcription"]
    assert (
        kwargs["target_instances"] == 5 and kwargs["min_instances"] == 5
    )  # waits for all its nodes
    assert kwargs["external_access_integrations"] == ["AUDIO_PIPELINE_ACCESS_INTEGRATION"]
    assert kwargs["name"] == "TRANSCRIPTS_ABCD1234EF"
    assert kwargs["query_warehouse"] == "ML_MODEL_WH"
