"""End to end on the local profile: real Ray head, real DuckDB, real tiny.en, real audio."""

import dagster as dg
import pytest

from audio_pipeline.definitions import ASSETS

from .conftest import make_resources

pytestmark = pytest.mark.slow


def materialize(selection, resources, instance, partition_key=None, config=None):
    run_config = {"ops": {selection: {"config": config}}} if config else None
    return dg.materialize(
        ASSETS,
        selection=[selection],
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )


def metadata(result, node):
    return {
        k: v.value for k, v in result.asset_materializations_for_node(node)[-1].metadata.items()
    }


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
    meta = metadata(first, "transcripts")  # reported by the payload through Pipes
    assert (meta["files"], meta["ok"], meta["errors"]) == (23, 22, 1)
    assert meta["wer"] < 0.25 and meta["wer_files"] == 22
    assert meta["audio_seconds"] > 130 and meta["x_real_time"] > 0
    assert meta["Ray Job ID"].startswith("transcripts-")
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
    assert metadata(second, "transcripts")["status"] == "cached"
    assert res["store"].query(
        "SELECT count(*), count(DISTINCT (file_path, model_id)) FROM transcripts"
    ) == [(23, 23)]

    retry = materialize(
        "transcripts", res, instance, "librispeech-sample", config={"retry_errors": True}
    )
    assert retry.success
    assert (metadata(retry, "transcripts")["files"], metadata(retry, "transcripts")["errors"]) == (
        1,
        1,
    )
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
    assert "Ray job transcripts-" in error and "--- log tail ---" in error
    assert "ModelError" in error and "no-such-model" in error
    assert res["store"].query("SELECT count(*) FROM transcripts") == [(0,)]
