"""Busy clusters: two runs at once, a job that makes no progress, the concurrency pool.

Real Ray (the session's head, 2 CPUs on the test machine), real DuckDB, real tiny.en.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from audio_pipeline.assets.transcripts import TRANSCRIPTION_POOL
from audio_pipeline.definitions import ASSETS, build_definitions
from audio_pipeline.run_health import _WITH_LAUNCHER, write_instance_yaml
from audio_pipeline.transcription.pipeline import actor_cpus

from .helpers import make_resources, materialize, sensor_batches, stage_sample

REPO = Path(__file__).resolve().parent.parent


def test_actors_never_take_every_cpu_of_a_small_cluster():
    assert actor_cpus(2, 1) == 1.0
    assert actor_cpus(2, 2) == 1.0  # decode tasks ask for no CPU: both actors fit
    assert actor_cpus(2, 4) == 0.5  # more actors than CPUs still fit
    assert actor_cpus(1, 3) == 0.33


def test_local_instance_fails_dead_runs_and_runs_one_transcription_at_a_time(tmp_path):
    older = tmp_path / "old"
    older.mkdir()
    (older / "dagster.yaml").write_text(_WITH_LAUNCHER)  # written by an earlier version
    write_instance_yaml(older)
    assert "run_launcher" not in (older / "dagster.yaml").read_text()
    write_instance_yaml(tmp_path)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert isinstance(instance.run_launcher, dg.DefaultRunLauncher)  # fail_dead_runs's case
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    finally:
        instance.dispose()
    sensors = {s.name for s in build_definitions(resources={}).sensors}
    assert {"fail_dead_runs", "stop_orphaned_jobs"} <= sensors
    spec = dg.Definitions(assets=ASSETS).get_assets_def("transcripts")
    assert spec.op.pool == TRANSCRIPTION_POOL


CHILD = """
import json, sys
import dagster as dg
from audio_pipeline.definitions import ASSETS
from audio_pipeline.resources.compute import LocalRayCompute
from audio_pipeline_tests.helpers import make_resources
from pathlib import Path
home, ray_home, gcs, dash, key, config = sys.argv[1:]
compute = LocalRayCompute(home=ray_home, gcs_port=int(gcs), dashboard_port=int(dash))
res = make_resources(Path(home), ray_compute=compute)
with dg.instance_for_test() as instance:
    instance.add_dynamic_partitions("transcript_batches", [key])
    result = dg.materialize(ASSETS, selection=["transcripts"], partition_key=key, resources=res,
        instance=instance, raise_on_error=False,
        run_config={"ops": {"transcripts": {"config": json.loads(config)}}})
sys.exit(0 if result.success else 1)
"""


@pytest.mark.slow
def test_two_runs_started_together_on_two_cpus_both_finish(home, instance, ray_compute):
    """Two jobs with two actors each on one 2-CPU cluster, from two processes (as two Dagster
    deployments or a pool limit above one would start them)."""
    res = make_resources(home, ray_compute=ray_compute)
    stage_sample(home)
    keys = sensor_batches(res, instance, cap=3)[:2]  # two batches of 3 files
    config = json.dumps({"actors": 2, "stall_timeout_s": 600})
    args = [str(home), ray_compute.home, str(ray_compute.gcs_port), str(ray_compute.dashboard_port)]
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, *args, key, config], cwd=REPO)
        for key in keys
    ]
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0]
    assert res["store"].query("SELECT count(*), count(DISTINCT file_path) FROM transcripts") == [
        (6, 6)
    ]


@pytest.mark.slow
def test_a_job_without_progress_fails_with_a_diagnosis_and_is_stopped(home, instance, ray_compute):
    res = make_resources(home, ray_compute=ray_compute)
    stage_sample(home)
    (key,) = sensor_batches(res, instance, cap=5000)
    # No row can come back within 1 s (the actors are still loading the model): a stall.
    result = materialize("transcripts", res, instance, key, {"stall_timeout_s": 1})
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    message = failure.to_string()
    assert "JobStalledError" in message and "no progress for" in message, message
    assert "0/22 rows written" in message and "CPU" in message and "free" in message, message
    client = JobSubmissionClient(ray_compute.dashboard_url)
    prefix = f"transcripts-{result.run_id[:8]}-"
    (job,) = [j for j in client.list_jobs() if (j.submission_id or "").startswith(prefix)]
    deadline = time.monotonic() + 30
    while client.get_job_status(job.submission_id) in (JobStatus.PENDING, JobStatus.RUNNING):
        assert time.monotonic() < deadline, "the stalled job was not stopped"
        time.sleep(0.5)
    assert client.get_job_status(job.submission_id) == JobStatus.FAILED
