"""A run on Snowflake whose process is killed: its ML Job is cancelled, not left billing.

Really started: `dagster dev` on the snowflake profile against an emulated account
(tools/snowflake_emulator: only Snowflake's SQL/REST endpoint emulated; the connector, Snowpark
and the ML Jobs SDK are real), the new-file sensor launching the run from files PUT to the
stage. The job waits for its nodes (PENDING, billed on a real account from the nodes' start), as
a 5-node job does while its pool resumes. ``kill -9`` of the run's process; fail_dead_runs and
stop_orphaned_jobs tick every 2 s here.
"""

from __future__ import annotations

import os
import signal

import dagster as dg
import pytest

from audio_pipeline.resources.stage import SnowflakeStage
from audio_pipeline.run_health import run_worker_pid, write_instance_yaml

from ..helpers import SAMPLE_TREE, account_connection, dagster_dev, wait_for

pytestmark = pytest.mark.slow


def test_a_killed_runs_ml_job_is_cancelled(tmp_path):
    from tools.snowflake_emulator import EmulatedAccount

    account = EmulatedAccount(tmp_path / "account", pending_s=600)  # the nodes never come
    account.start()
    try:
        connection = account_connection(account)
        stage = SnowflakeStage(connection=connection)
        for flac in sorted(SAMPLE_TREE.glob("*/*/*.flac"))[:3]:
            assert stage.put_file(flac, f"drop/{flac.name}")
        stage.close()
        home = tmp_path / "home"
        dagster_home = home / "dagster"
        write_instance_yaml(dagster_home)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SNOWFLAKE_")} | {
            "AUDIO_PIPELINE_PROFILE": "snowflake",
            "AUDIO_PIPELINE_HOME": str(home),
            "DAGSTER_HOME": str(dagster_home),
            "AUDIO_PIPELINE_SENSOR_INTERVAL_S": "2",
            "AUDIO_PIPELINE_JOB_NODES": "1",
            "SNOWFLAKE_ACCOUNT": "emulated",
            "SNOWFLAKE_USER": "dead-run",
            "SNOWFLAKE_PASSWORD": "emulated",
            "SNOWFLAKE_HOST": "127.0.0.1",
            "SNOWFLAKE_PORT": str(account.port),
            "SNOWFLAKE_PROTOCOL": "http",
            "SNOWFLAKE_DATABASE": connection.database,
            "SNOWFLAKE_SCHEMA": connection.schema_name,
            "SNOWFLAKE_WAREHOUSE": connection.warehouse,
            "SNOWFLAKE_NETWORK_TIMEOUT": "30",
        }
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        try:
            with dagster_dev(tmp_path, env) as server:

                def started_run():
                    runs = instance.get_runs(dg.RunsFilter(job_name="transcribe_new_files"))
                    started = dg.DagsterRunStatus.STARTED
                    return runs[0] if runs and runs[0].status == started else None

                run = wait_for("a sensor run", started_run, 240, server.log)
                prefix = "TRANSCRIPTS_" + run.run_id.replace("-", "")[:12].upper()

                def its_job():
                    jobs = [j for j in account.jobs.values() if j.name.startswith(prefix)]
                    return jobs[0] if jobs and jobs[0].status == "PENDING" else None

                job = wait_for("its ML Job", its_job, 240, server.log)
                pid = run_worker_pid(instance, run.run_id)
                assert pid and pid != server.proc.pid
                os.kill(pid, signal.SIGKILL)

                def failed():
                    status = instance.get_run_by_id(run.run_id).status
                    return status == dg.DagsterRunStatus.FAILURE

                wait_for("the run marked failed", failed, 120, server.log)

                def cancelled():
                    assert job.status in ("PENDING", "CANCELLING", "CANCELLED"), job.status
                    return job.status == "CANCELLED"

                wait_for("the ML Job cancelled", cancelled, 120, server.log)
        finally:
            instance.dispose()
    finally:
        account.stop()
