"""An ML Job's life around the run that submits it: the start policy, the pool-size check before
submission, the job's own deadline, the orphaned-job sensor cancelling a dead run's job, and the
clean-up of finished jobs. On the emulated account where a job runs (tools/snowflake_emulator:
only Snowflake's SQL/REST endpoint and the container are emulated; the ML Jobs SDK is real)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import dagster as dg
import pytest

from audio_pipeline.resources.compute import (
    ComputePoolError,
    SnowflakeMLJobCompute,
    build_payload_dir,
)
from audio_pipeline.resources.compute.bundle import DEADLINE_ENV, PAYLOAD_ENTRY
from audio_pipeline.resources.compute.snowflake_ml import job_name
from audio_pipeline.resources.snowflake_connection import SnowflakeConnection
from audio_pipeline.sensors import build_stop_orphaned_jobs_sensor

from ..helpers import RecordingCursor

DESCRIBE = ["name", "state", "min_nodes", "max_nodes", "instance_family"]


def compute(**kw) -> SnowflakeMLJobCompute:
    return SnowflakeMLJobCompute(connection=SnowflakeConnection(connection_name="unused"), **kw)


def test_min_instances_defaults_to_the_target():
    assert compute().submit_args("m", "abc")["min_instances"] == 5
    assert compute(target_instances=3).submit_args("m", "abc")["min_instances"] == 3
    assert compute(min_instances=2).submit_args("m", "abc")["min_instances"] == 2
    assert compute(min_instances=9).submit_args("m", "abc")["min_instances"] == 5
    assert compute().submit_args("m", "abc", ingest=True)["min_instances"] == 1


def test_target_above_the_pools_max_nodes_is_refused():
    row = ("AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES", "IDLE", 1, 3, "GPU_NV_S")
    cursor = RecordingCursor({"DESCRIBE": (DESCRIBE, [row])})
    with pytest.raises(ComputePoolError) as err:
        compute(target_instances=5).check_pool_fits(cursor)
    assert "target_instances=5 nodes but compute pool AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES" in str(
        err.value
    )
    assert "MAX_NODES=3" in str(err.value) and "lower the compute resource's" in str(err.value)
    assert compute(target_instances=3).check_pool_fits(cursor)["max_nodes"] == 3


def test_a_too_large_job_is_refused_before_anything_is_submitted(acct_connection, emulated_account):
    big = SnowflakeMLJobCompute(connection=acct_connection, target_instances=8)

    @dg.asset
    def transcripts_job(context):
        big.run_payload(context, {})

    before = set(emulated_account.jobs)
    result = dg.materialize([transcripts_job], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message  # the resource's error
    assert "target_instances=8 nodes" in message and "MAX_NODES=5" in message
    assert set(emulated_account.jobs) == before  # nothing submitted, no credits spent


@pytest.mark.slow  # a subprocess: the entry script as the container runs it
def test_the_job_ends_itself_at_its_deadline(tmp_path):
    """The job's timeout does not depend on the Dagster process that follows it."""
    bundle = build_payload_dir(tmp_path / "bundle")
    (bundle / "sleeper.py").write_text(
        "import time\nprint('working', flush=True)\ntime.sleep(600)\n"
    )
    env = {"PATH": "/usr/bin:/bin", DEADLINE_ENV: f"{time.time() + 2:.0f}"}
    out = subprocess.run(
        [sys.executable, str(bundle / PAYLOAD_ENTRY), "sleeper"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 124
    assert out.stdout.splitlines() == [
        "working",
        f"job deadline passed ({DEADLINE_ENV}={env[DEADLINE_ENV]}): ending the job",
    ]


def _failed_run(instance) -> tuple[dg.DagsterRun, dg.DagsterEvent]:
    @dg.op
    def dies():
        raise RuntimeError("the run's process died")

    @dg.job
    def transcribe():
        dies()

    result = transcribe.execute_in_process(instance=instance, raise_on_error=False)
    return instance.get_run_by_id(result.run_id), result.get_run_failure_event()


def _wait(what: str, predicate, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s:.0f} s"
        time.sleep(0.3)


def test_a_dead_runs_job_is_cancelled_and_expired_jobs_removed(
    acct_connection, emulated_account, tmp_path
):
    """The orphaned-job sensor cancels the ML Job of a failed run (found by the job name that
    carries the run id); a failed job is kept ``keep_failed_days``, then its service, payload
    copy and Pipes chunks are removed."""
    from snowflake.ml import jobs

    instance = dg.DagsterInstance.ephemeral()
    run, failure = _failed_run(instance)
    compute = SnowflakeMLJobCompute(connection=acct_connection, keep_failed_days=7)
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "sleep_job.py").write_text("import time\ntime.sleep(600)\n")
    database, schema = acct_connection.schema_fqn
    with acct_connection.snowpark_session() as session:
        job = jobs.submit_directory(
            dir_path=str(payload),
            compute_pool=compute.pool_name,
            entrypoint="sleep_job.py",
            stage_name=f"{database}.{schema}.{compute.job_stage}",
            target_instances=1,
            min_instances=1,
            name=job_name(run.run_id, "transcripts"),
            query_warehouse=acct_connection.warehouse,
            database=database,
            schema=schema,
            session=session,
        )
        emulated = emulated_account.jobs[job.id]
        _wait("the job running", lambda: emulated.status == "RUNNING")

        sensor = build_stop_orphaned_jobs_sensor(30)
        with dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
            resources={"compute": compute},
        ) as context:
            sensor(context.for_run_failure())
        _wait("the job cancelled", lambda: emulated.status == "CANCELLED", 60)
        assert str(job.status) == "CANCELLED"

        # a Pipes chunk folder of that failed job, as old as the job
        session.sql(f"PUT 'file://{payload / 'sleep_job.py'}' @{database}.{schema}."
                    f"{compute.job_stage}/pipes/0a1b2c/ AUTO_COMPRESS=FALSE").collect()  # fmt: skip
        assert compute.remove_expired_jobs(session) == []  # failed, but not 7 days old yet
        assert not emulated.dropped
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
        removed = compute.remove_expired_jobs(session, now=later)
    chunks = f'@"{database}"."{schema}"."{compute.job_stage}"/pipes/0a1b2c/'
    assert removed == [job.id, chunks]
    assert emulated.dropped
    assert not [p for p in emulated.mount.rglob("*") if p.is_file()]  # the payload copy
    assert not [p for p in (emulated.mount.parent / "pipes").rglob("*") if p.is_file()]
