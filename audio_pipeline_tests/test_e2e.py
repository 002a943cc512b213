"""End to end on the local profile: real Ray head, real DuckDB, real tiny.en, real audio."""

import dagster as dg
import pytest

from audio_pipeline.definitions import ASSETS

from .helpers import make_resources, materialize, metadata

pytestmark = pytest.mark.slow


def test_sample_corpus_end_to_end_with_a_corrupt_file(home, instance, ray_compute):
    res = make_resources(home, ray_compute=ray_compute)
    assert materialize("librispeech_audio", res, instance, "sample").success
    # A corrupt FLAC dropped into the same batch.
    (home / "stage" / "sample" / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)
    res["store"].register_files(
        [
            {
                "file_path": "sample/corrupt.flac",
                "size_bytes": 2052,
                "batch_key": "librispeech-sample",
                "source": "test",
            }
        ]
    )

    pool = materialize("transcription_compute_pool", res, instance)
    assert pool.success
    pool_meta = metadata(pool, "transcription_compute_pool")
    assert pool_meta["nodes"] == 1 and pool_meta["cpus"] >= 1
    assert pool_meta["address"] == ray_compute.dashboard_url

    first = materialize("transcripts", res, instance, "librispeech-sample")
    assert first.success
    meta = metadata(first, "transcripts")  # the partition's figures and the job's
    assert (meta["files"], meta["transcribed_now"], meta["ok"], meta["errors"]) == (23, 23, 22, 1)
    assert meta["wer_percent"] < 25 and meta["wer_files"] == 22
    assert meta["audio_minutes"] > 2.1 and meta["x_real_time"] > 0
    assert meta["Ray Job ID"].startswith("transcripts-")
    assert meta["Ray job"] == f"{ray_compute.dashboard_url}/#/jobs/{meta['Ray Job ID']}"
    assert "| sample/corrupt.flac | error |" in meta["preview"]
    progress = [
        e.user_message
        for e in instance.all_logs(first.run_id)
        if e.user_message.startswith("progress: ")
    ]
    assert progress[-1].startswith("progress: 23/23 files, ") and "x real time" in progress[-1]
    rows = res["store"].query("SELECT status, count(*) FROM transcripts GROUP BY 1 ORDER BY 1")
    assert rows == [("error", 1), ("ok", 22)]
    (error,) = res["store"].query("SELECT error FROM transcripts WHERE status = 'error'")
    assert "sample/corrupt.flac" in error[0] and "cannot decode" in error[0]
    (long,) = res["store"].query(
        "SELECT duration_s, json_array_length(segments) FROM transcripts "
        "WHERE file_path LIKE '%128105-0000.flac'"
    )
    assert long[0] > 40 and long[1] >= 3

    second = materialize("transcripts", res, instance, "librispeech-sample")
    assert second.success
    cached = metadata(second, "transcripts")
    # Nothing to do: the partition still shows the table's figures, not zeros.
    assert cached["status"] == "cached" and cached["transcribed_now"] == 0
    assert (cached["files"], cached["ok"], cached["errors"]) == (23, 22, 1)
    assert cached["wer_percent"] == meta["wer_percent"]
    assert cached["x_real_time"] == meta["x_real_time"] and cached["preview"] == meta["preview"]
    assert res["store"].query(
        "SELECT count(*), count(DISTINCT (file_path, model_id)) FROM transcripts"
    ) == [(23, 23)]

    # The checks alone (the UI's "Execute checks", unpartitioned): evaluated from the table over
    # every batch, no job, no new materialization.
    job = dg.define_asset_job(
        "transcript_checks", selection=dg.AssetSelection.checks_for_assets("transcripts")
    )
    defs = dg.Definitions(assets=ASSETS, jobs=[job], resources=res)
    checks_only = defs.resolve_job_def("transcript_checks").execute_in_process(instance=instance)
    assert checks_only.success
    assert not checks_only.asset_materializations_for_node("transcripts")
    evaluations = {c.check_name: c for c in checks_only.get_asset_check_evaluations()}
    assert set(evaluations) == {"completeness", "error_rate", "wer", "hallucinations"}
    assert evaluations["wer"].metadata["wer_percent"].value == meta["wer_percent"]

    retry = materialize(
        "transcripts", res, instance, "librispeech-sample", config={"retry_errors": True}
    )
    assert retry.success
    retried = metadata(retry, "transcripts")
    assert (retried["transcribed_now"], retried["files"], retried["errors"]) == (1, 23, 1)
    assert res["store"].query("SELECT count(*) FROM transcripts") == [(23,)]


def test_failing_job_fails_the_materialization_with_its_log_tail(home, instance, ray_compute):
    res = make_resources(home, ray_compute=ray_compute)
    assert materialize("librispeech_audio", res, instance, "sample").success
    result = materialize(
        "transcripts",
        res,
        instance,
        "librispeech-sample",
        config={"model": str(home / "no-such-model")},
    )
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "Ray job transcripts-" in error and "FAILED: ModelError: " in error
    assert "no-such-model" in error and "last log lines:" in error
    # What the UI shows: no Pipes protocol, no Python or Ray stack frames.
    description = error.split("Stack Trace:")[0]
    assert "__dagster_pipes_version" not in description and 'File "' not in description
    assert res["store"].query("SELECT count(*) FROM transcripts") == [(0,)]
