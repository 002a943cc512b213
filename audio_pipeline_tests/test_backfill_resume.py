"""Single-run backfills and resume after a killed job, with real Ray, DuckDB and tiny.en."""

import time

import dagster as dg
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from audio_pipeline.definitions import ASSETS

from .helpers import make_resources, sensor_batches, stage_sample, start_transcription

pytestmark = pytest.mark.slow


def ray_jobs(compute):
    return JobSubmissionClient(compute.dashboard_url).list_jobs()


@pytest.mark.long
def test_backfill_of_three_partitions_is_one_job_over_their_union(home, instance, ray_compute):
    res = make_resources(home, ray_compute=ray_compute)
    stage_sample(home, odd_names=True, short_only=True)  # long files: test_multinode_*, e2e
    keys = sensor_batches(res, instance, cap=7)
    assert len(keys) == 3
    jobs_before = len(ray_jobs(ray_compute))
    result = dg.materialize(
        ASSETS,
        selection=["transcripts"],
        resources=res,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
        # The local default is ctranslate2: cover the transformers engine through Ray here.
        run_config={"ops": {"transcripts": {"config": {"engine": "transformers"}}}},
    )
    assert result.success
    assert len(ray_jobs(ray_compute)) == jobs_before + 1
    meta = result.asset_materializations_for_node("transcripts")
    assert {m.partition for m in meta} == set(keys)
    # Each partition reports its own figures; the job's are alongside.
    own = {m.partition: {k: v.value for k, v in m.metadata.items()} for m in meta}
    sizes = {k: (v["files"], v["transcribed_now"], v["ok"]) for k, v in own.items()}
    assert sizes == {key: (7, 7, 7) for key in keys}
    assert {v["job_files"] for v in own.values()} == {21}
    assert len({v["preview"] for v in own.values()}) == 3
    rows = res["store"].query(
        "SELECT batch_key, count(*), count(DISTINCT run_id) "
        "FROM transcripts WHERE status = 'ok' GROUP BY 1 ORDER BY 1"
    )
    assert [(k, n) for k, n, _ in rows] == [(key, 7) for key in keys]
    assert {r[2] for r in rows} == {1}
    odd = res["store"].query(
        "SELECT count(*) FROM transcripts WHERE file_path LIKE 'drop/%;%' "
        "OR file_path LIKE 'drop/-%' OR file_path LIKE '%日本%'"
    )
    assert odd == [(3,)]


def test_killed_job_keeps_its_rows_and_the_rerun_does_the_rest(home, instance, ray_compute):
    res = make_resources(home, ray_compute=ray_compute)
    stage_sample(home, short_only=True)
    (key,) = sensor_batches(res, instance, cap=5000)
    thread, outcome = start_transcription(res, instance, key)
    client = JobSubmissionClient(ray_compute.dashboard_url)
    deadline = time.monotonic() + 240
    killed = None
    while time.monotonic() < deadline and thread.is_alive():
        written = res["store"].query("SELECT count(*) FROM transcripts")[0][0]
        if written >= 4:
            running = [j for j in client.list_jobs() if j.status == JobStatus.RUNNING]
            for job in running:
                client.stop_job(job.submission_id)
            killed = written
            break
        time.sleep(0.2)
    thread.join(timeout=240)
    assert killed is not None, "the job finished before it could be killed"
    assert not outcome["result"].success  # Dagster sees the failure
    before = dict(
        (r[0], r[1:])
        for r in res["store"].query(
            "SELECT file_path, run_id, transcribed_at, text FROM transcripts"
        )
    )
    assert 4 <= len(before) < 21

    rerun = dg.materialize(
        ASSETS, selection=["transcripts"], partition_key=key, resources=res, instance=instance
    )
    assert rerun.success
    meta = rerun.asset_materializations_for_node("transcripts")[0].metadata
    assert meta["transcribed_now"].value == 21 - len(before)
    after = {
        r[0]: r[1:]
        for r in res["store"].query(
            "SELECT file_path, run_id, transcribed_at, text FROM transcripts"
        )
    }
    assert len(after) == 21
    assert res["store"].query("SELECT count(*), count(DISTINCT file_path) FROM transcripts") == [
        (21, 21)
    ]
    assert all(after[p] == before[p] for p in before)  # earlier rows untouched
