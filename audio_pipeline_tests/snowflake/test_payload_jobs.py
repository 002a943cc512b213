"""The real payload directory, submitted by SnowflakeMLJobCompute through the ML Jobs stand-in.

``snowflake.ml.jobs.submit_directory`` is replaced by the conftest stand-in (the only test
double): it runs the bundle the compute built, in a subprocess, as the job would run in Snowflake.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from audio_pipeline.librispeech import BUNDLED_ROOT, iter_references
from audio_pipeline.resources.compute import SnowflakeMLJobCompute, build_payload_dir
from audio_pipeline.resources.stage import LocalStage, SnowflakeStage
from audio_pipeline.resources.warehouse import DuckDBStore, SnowflakeStore
from audio_pipeline.transcription.pipeline import plan_actors

SAMPLE = BUNDLED_ROOT / "sample"


def test_payload_bundle_imports_nothing_from_dagster_but_pipes(tmp_path):
    bundle = build_payload_dir(tmp_path / "bundle")
    assert (bundle / "sql" / "snowflake" / "merge_into_transcripts.sql").is_file()
    assert not (bundle / "audio_pipeline" / "resources").exists()
    code = f"""
import sys
sys.path.insert(0, {str(bundle)!r})
sys.modules["dagster"] = None  # any "import dagster" fails
import audio_pipeline
import audio_pipeline.transcription.__main__, audio_pipeline.transcription.entry
import audio_pipeline.transcription.ingest_job
from audio_pipeline.transcription import sinks, sources
assert audio_pipeline.__file__.startswith({str(bundle)!r}), audio_pipeline.__file__
loaded = [m for m in sys.modules if m.startswith("dagster") and sys.modules[m]]
print(sorted({{m.split(".")[0] for m in loaded}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['dagster_pipes']"


@pytest.mark.parametrize(
    "gpus,nodes,jobs,expected",
    [(1, 1, 5, 5), (5, 5, 5, 5), (2, 1, 5, 10), (8, 2, 1, 8), (1, 1, None, 1), (3, 3, 3, 3)],
)
def test_actor_pool_from_cluster_gpus_and_jobs_count(gpus, nodes, jobs, expected):
    actors, _, gpus_each = plan_actors(8 * nodes, gpus, None, None, nodes, jobs)
    assert (actors, gpus_each) == (expected, 1)


def job_asset(compute: SnowflakeMLJobCompute, extras: dict, ingest: bool = False):
    @dg.asset(name="ingest_job" if ingest else "transcripts_job")
    def run(context):
        runner = compute.run_ingest if ingest else compute.run_payload
        invocation = runner(context, extras)
        result = invocation.get_materialize_result()
        return dg.MaterializeResult(metadata={**result.metadata, **invocation.metadata})

    return run


def test_ingest_job_on_the_emulated_account(acct_connection, emulated_account, tmp_path):
    """The CPU-pool ingest job through the real ML Jobs SDK and launcher: the payload's SQL runs
    on the launcher's Snowpark session (``get_active_session()``, paramstyle qmark), as in a
    Snowflake container. Before the fix: ProgrammingError 252004 "Binding parameters must be a
    list" at the first bound query."""
    mirror = tmp_path / "mirror"
    shutil.copytree(SAMPLE, mirror / "LibriSpeech" / "dev-clean")
    stage = SnowflakeStage(connection=acct_connection)
    store = SnowflakeStore(connection=acct_connection)
    compute = SnowflakeMLJobCompute(connection=acct_connection, poll_interval_s=0.3)
    extras = {
        "ingest": {
            "subset": "dev-clean",
            "mirror": str(mirror),
            "work_dir": str(tmp_path / "work"),
            "batch_key": "librispeech-dev-clean",
            "stage": stage.payload_spec(),
            "sink": store.payload_spec(),
        }
    }
    before = set(emulated_account.jobs)
    result = dg.materialize([job_asset(compute, extras, ingest=True)], raise_on_error=False)
    (job_id,) = set(emulated_account.jobs) - before
    job = emulated_account.jobs[job_id]
    assert result.success, job.head.text()[-3000:]
    assert "Binding parameters must be a list" not in job.head.text()
    assert "paramstyle" not in job.env  # nothing of ours forces the style: the runtime's qmark
    n = len(list(SAMPLE.glob("*/*/*.flac")))
    meta = result.asset_materializations_for_node("ingest_job")[0].metadata
    assert meta["files"].value == n and meta["uploaded"].value == n
    assert meta["references"].value == n
    assert job.pool == "AUDIO_PROCESSING_CP_DATA_DOWNLOAD" and job.target_instances == 1
    assert job.args[-1] == "audio_pipeline.transcription.ingest_job"
    listed = [f.path for f in stage.list_files("dev-clean")]
    assert len(listed) == n and listed[0].startswith("dev-clean/1001/128104/")
    pending = store.pending_files(["librispeech-dev-clean"], "m")
    assert sorted(p.file_path for p in pending) == sorted(listed)


@pytest.mark.slow
def test_real_transcription_payload_through_the_stand_in(
    sf_connection, fake_ml_jobs, ray_compute, tmp_path
):
    """compute.run_payload → bundle → stand-in job → Ray + tiny.en → DuckDB → Pipes metadata."""
    stage = LocalStage(root=str(tmp_path / "stage"))
    store = DuckDBStore(path=str(tmp_path / "warehouse.duckdb"))
    store.ensure_tables()
    flacs = sorted(SAMPLE.glob("*/*/*.flac"))[:2]
    rows = []
    for f in flacs:
        rel = f"sample/{f.relative_to(SAMPLE).as_posix()}"
        stage.put_file(f, rel)
        rows.append({"file_path": rel, "size_bytes": f.stat().st_size, "batch_key": "b1"})
    store.register_files(rows)
    paths = {r["file_path"] for r in rows}
    store.load_references(
        [
            {"utterance_id": u, "file_path": p, "text": t}
            for u, p, t in iter_references(SAMPLE)
            if p in paths
        ]
    )
    fake_ml_jobs.platform_env = {"RAY_ADDRESS": f"127.0.0.1:{ray_compute.gcs_port}"}
    compute = SnowflakeMLJobCompute(
        connection=sf_connection, home=str(tmp_path / "home"), poll_interval_s=0.5
    )
    job = {
        "batch_keys": ["b1"],
        "model": "bundled:tiny.en",
        "model_id": "bundled:tiny.en",
        "engine": "transformers",
        "home": compute.home,
        "source": stage.payload_spec(),
        "sink": store.payload_spec(),
        "decoding": {"language": "en", "batch_size": 2},
        "run_id": "stand-in-run",
    }
    result = dg.materialize(
        [job_asset(compute, {"job": job, "partition_keys": ["b1"]})], raise_on_error=False
    )
    log = fake_ml_jobs.jobs[0].get_logs() if fake_ml_jobs.jobs else ""
    assert result.success, log[-3000:]
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node("transcripts_job")[0].metadata.items()
    }
    assert (meta["files"], meta["ok"], meta["errors"]) == (2, 2, 0)
    assert meta["expected_nodes"] == 5
    assert meta["snowflake_ml_job_status"] == "DONE"
    assert meta["wer"] < 0.3 and meta["wer_files"] == 2
    texts = store.query("SELECT text FROM transcripts WHERE status = 'ok'")
    assert len(texts) == 2 and all(len(t[0]) > 10 for t in texts)
    call = fake_ml_jobs.submissions[0]
    assert call["args"] == ["audio_pipeline.transcription"]
    assert call["entrypoint"] == "run_payload.py"
    assert os.path.basename(call["dir_path"]) == "payload"
