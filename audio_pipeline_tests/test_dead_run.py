"""A run whose process is killed: `dagster dev` (its daemon) marks it failed, its Ray job stops.

Really started: `dagster dev` with the dagster.yaml that `make dev` writes (run monitoring every
5 s here), the session's Ray head, the new-file sensor launching the run.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from audio_pipeline.run_health import run_worker_pid, write_instance_yaml

from .helpers import REALSPEECH, free_port, stage_sample

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def wait_for(what: str, fn, timeout_s: float, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := fn():
            return value
        time.sleep(1)
    pytest.fail(f"{what} not within {timeout_s:.0f} s; dagster dev log:\n{log.read_text()[-4000:]}")


def test_a_killed_run_is_marked_failed_and_its_ray_job_stopped(tmp_path, ray_compute):
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    config = write_instance_yaml(dagster_home)
    config.write_text(
        config.read_text().replace("poll_interval_seconds: 30", "poll_interval_seconds: 5")
    )
    stage_sample(home)
    # more audio, so that the job is still running when the sensor stops it
    for flac in sorted(REALSPEECH.glob("*/*/*.flac")):
        shutil.copyfile(flac, home / "stage" / "drop" / flac.name)
    env = os.environ | {
        "AUDIO_PIPELINE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "AUDIO_PIPELINE_RAY_PORT": str(ray_compute.gcs_port),
        "AUDIO_PIPELINE_RAY_DASHBOARD_PORT": str(ray_compute.dashboard_port),
        "AUDIO_PIPELINE_SENSOR_INTERVAL_S": "5",
    }
    env.pop("RAY_ADDRESS", None)
    log_path = tmp_path / "dagster-dev.log"
    port = free_port()
    with open(log_path, "wb") as log:
        # dagster dev ignores SIGTERM when backgrounded: own session, stopped by PID.
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster")), "dev", "-h", "127.0.0.1",
             "-p", str(port), "-w", "workspace.yaml"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    client = JobSubmissionClient(ray_compute.dashboard_url)
    prefix = "transcripts-(none yet)"
    try:
        wait_for(
            "dagster dev",
            lambda: _answers(f"http://127.0.0.1:{port}/server_info"),
            120,
            log_path,
        )

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
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=20)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        for j in client.list_jobs():
            if (j.submission_id or "").startswith(prefix) and j.status in (
                JobStatus.RUNNING,
                JobStatus.PENDING,
            ):
                client.stop_job(j.submission_id)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False
