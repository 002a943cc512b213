"""The real payload directory, submitted by SnowflakeMLJobCompute through the real ML Jobs SDK
to the emulated account (tools/snowflake_emulator), run by the wheel's launcher as in a Snowflake
container.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import dagster as dg
import pytest

from audio_pipeline.resources.compute import SnowflakeMLJobCompute, build_payload_dir
from audio_pipeline.resources.stage import SnowflakeStage
from audio_pipeline.resources.warehouse import SnowflakeStore
from audio_pipeline.transcription.librispeech import BUNDLED_ROOT
from audio_pipeline.transcription.pipeline import plan_actors

SAMPLE = BUNDLED_ROOT / "sample"


@pytest.mark.slow  # a subprocess
def test_payload_bundle_imports_nothing_from_dagster_but_pipes(tmp_path):
    bundle = build_payload_dir(tmp_path / "bundle")
    sql = bundle / "audio_pipeline" / "transcription" / "sql_files"
    assert (sql / "snowflake" / "merge_into_transcripts.sql").is_file()
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
    # a job that ended DONE is removed once its messages are read: service, payload copy, chunks
    assert job.dropped
    assert not [f for f in job.mount.rglob("*") if f.is_file()]
    assert not [f for f in (job.mount.parent / "pipes").rglob("*") if f.is_file()]
    listed = [f.path for f in stage.list_files("dev-clean")]
    assert len(listed) == n and listed[0].startswith("dev-clean/1001/128104/")
    pending = store.pending_files(["librispeech-dev-clean"], "m")
    assert sorted(p.file_path for p in pending) == sorted(listed)


@pytest.mark.long
def test_a_hub_model_is_downloaded_once_then_loaded_from_the_models_stage(
    acct_connection, emulated_account, tmp_path
):
    """Two transcription jobs with a pinned Hub model: the first downloads it from the Hub (a
    stand-in on 127.0.0.1, HF_ENDPOINT) and copies it to the models stage; the second, on a new
    node (an empty home), downloads nothing from the Hub and GETs it from the stage. The model is
    tiny.en (transformers). That a node which has the model GETs nothing but the manifest is
    held in test_stage_reads, on model_stage itself."""
    from audio_pipeline.transcription import model_stage
    from audio_pipeline.transcription.convert import ensure_converted
    from audio_pipeline.transcription.models import bundled_ct2_path
    from audio_pipeline.transcription.settings import JobSettings
    from audio_pipeline.transcription.sinks import manifest_row

    from ..helpers import FakeHub

    revision = "0123456789abcdef0123456789abcdef01234567"
    tiny = ensure_converted(bundled_ct2_path(), tmp_path / "tiny-hf")
    hub = FakeHub({"test-org/whisper-tiny.en": (revision, tiny)})
    emulated_account.extra_env["HF_ENDPOINT"] = hub.url
    stage = SnowflakeStage(connection=acct_connection)
    store = SnowflakeStore(connection=acct_connection)
    flacs = sorted(SAMPLE.glob("*/*/*.flac"))[:2]
    for flac in flacs:
        stage.put_file(flac, f"models-test/{flac.name}")
    stage.close()
    store.register_files(
        [manifest_row(f"models-test/{f.name}", f.stat().st_size, "mt", "test") for f in flacs]
    )
    # one node per job: each job's home stands for another node's disk
    compute = SnowflakeMLJobCompute(
        connection=acct_connection, poll_interval_s=0.3, target_instances=1
    )
    model_gets = []

    def job(home):
        settings = JobSettings(
            batch_keys=["mt"],
            model=f"test-org/whisper-tiny.en@{revision}",
            engine="transformers",
            home=str(home),
            source=stage.payload_spec(),
            sink=store.payload_spec(),
            force=True,
        )
        before = len(emulated_account.statements)
        result = dg.materialize(
            [job_asset(compute, {"job": settings.to_extras()})], raise_on_error=False
        )
        statements = [s for _r, s in emulated_account.statements[before:]]
        model_gets.append([s for s in statements if s.startswith("GET") and "/models/" in s])
        assert result.success, list(emulated_account.jobs.values())[-1].head.text()[-4000:]
        meta = result.asset_materializations_for_node("transcripts_job")[0].metadata
        assert meta["ok"].value == 2 and meta["model_id"].value == "test-org/whisper-tiny.en"
        return len(hub.file_downloads())

    try:
        first = job(tmp_path / "node-a")
        second = job(tmp_path / "node-b")
    finally:
        emulated_account.extra_env.pop("HF_ENDPOINT", None)
        hub.close()
    assert first >= 3  # config, tokenizer, weights...: from the Hub, once
    assert second == first  # the second job asked the Hub for nothing
    manifest = f"/models/test-org/whisper-tiny.en/{revision}/{model_stage.COMPLETE}"
    weights = [s for s in model_gets[1] if s.split("'")[1].endswith("model.safetensors")]
    assert len(weights) == 1  # node-b's copy, from the stage
    assert any(manifest in s for s in model_gets[1])
    assert (tmp_path / "node-b" / "models" / "staged").is_dir()
