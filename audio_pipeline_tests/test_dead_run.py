"""A run whose process is killed: `dagster dev` (its daemon) marks it failed, its Ray job stops.

Really started: `dagster dev` with the dagster.yaml that `make dev` writes, the session's Ray
head, the new-file sensor launching the run; fail_dead_runs and stop_orphaned_jobs tick
every 2 s here.
"""

import os
import shutil
import signal
from pathlib import Path

import dagster as dg
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from audio_pipeline.run_health import run_worker_pid, write_instance_yaml

from .helpers import REALSPEECH, dagster_dev, stage_sample, wait_for

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_a_killed_run_is_marked_failed_and_its_ray_job_stopped(tmp_path, ray_compute):
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    write_instance_yaml(dagster_home)
    stage_sample(home)
    # more audio, so that the job is still running when the sensor stops it
    for flac in sorted(REALSPEECH.glob("*/*/*.flac")):
        shutil.copyfile(flac, home / "stage" / "drop" / flac.name)
    env = os.environ | {
        "AUDIO_PIPELINE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "AUDIO_PIPELINE_RAY_PORT": str(ray_compute.gcs_port),
        "AUDIO_PIPELINE_RAY_DASHBOARD_PORT": str(ray_compute.dashboard_port),
        "AUDIO_PIPELINE_SENSOR_INTERVAL_S": "2",
    }
    env.pop("RAY_ADDRESS", None)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    client = JobSubmissionClient(ray_compute.dashboard_url)
    prefix = "transcripts-(none yet)"
    try:
        with dagster_dev(tmp_path, env) as server:
            log_path, proc = server.log, server.proc

            def started_run():
                runs = instance.get_runs(dg.RunsFilter(job_name="transcribe_new_files"))
                return runs[0] if runs and runs[0].status == dg.DagsterRunStatus.STARTED else None

            run = wait_for("a sensor run", started_run, 180, log_path)
            prefix = f"transcripts-{run.run_id[:8]}-"

            def running_job():
                jobs = [j for j in client.list_jobs() if (j.submission_id or "").startswith(prefix)]
                return jobs[0] if jobs and jobs[0].status == JobStatus.RUNNING else None

            job = wait_for("its Ray job", running_job, 180, log_path)
            pid = run_worker_pid(instance, run.run_id)
            assert pid and pid != proc.pid
            os.kill(pid, signal.SIGKILL)

            def failed():
                current = instance.get_run_by_id(run.run_id)
                return current.status == dg.DagsterRunStatus.FAILURE

            wait_for("the run marked failed", failed, 90, log_path)
            # The fail_dead_runs sensor found the PID gone.

            def stopped():
                status = client.get_job_status(job.submission_id)
                assert status in (JobStatus.RUNNING, JobStatus.STOPPED), (
                    f"the orphaned Ray job ended {status} before it was stopped"
                )
                return status == JobStatus.STOPPED

            wait_for("the Ray job stopped", stopped, 120, log_path)
    finally:
        instance.dispose()
        for j in client.list_jobs():
            if (j.submission_id or "").startswith(prefix) and j.status in (
                JobStatus.RUNNING,
                JobStatus.PENDING,
            ):
                client.stop_job(j.submission_id)
