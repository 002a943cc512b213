"""Real speech (../shared/data/realspeech beside the repository): accuracy, mirror subsets, bench.

The real-speech set is 51 LibriSpeech utterances (7.8 min, CC BY 4.0); CI puts a copy of
``shared/`` beside the clone. Without it these tests are skipped, saying where it was looked for.
"""

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import dagster as dg
import pytest

from audio_pipeline.definitions import ASSETS
from audio_pipeline.partitions import transcript_batches
from audio_pipeline.transcription import librispeech
from audio_pipeline.transcription.models import resolve_model
from audio_pipeline.transcription.quality import corpus_wer

from .helpers import MIRROR, REPO_ROOT, free_port, make_resources
from .helpers import REALSPEECH as TREE

needs_realspeech = pytest.mark.skipif(
    not TREE.is_dir(), reason=f"real-speech set not found at {TREE} (copy shared/ beside the repo)"
)


@pytest.fixture(scope="module")
def private_ray(tmp_path_factory):
    """A Ray head with a temp dir of its own: a job's driver finds its cluster through
    ``<temp dir>/ray_current_cluster``, which any other head sharing /tmp/ray rewrites."""
    from audio_pipeline.resources.compute import LocalRayCompute

    ray_tmp = tmp_path_factory.mktemp("rt")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    compute = LocalRayCompute(
        home=str(tmp_path_factory.mktemp("rayhome")),
        gcs_port=free_port(),
        dashboard_port=free_port(),
        object_store_memory_mb=512,
        isolated_ports=True,
    )
    try:
        compute.ensure_pool()
    finally:
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
    yield compute
    assert compute.stop()


def _corpus() -> list[tuple[librispeech.Utterance, str]]:
    refs = dict((utt, text) for utt, _, text in librispeech.iter_references(TREE))
    return [(u, refs[u.utterance_id]) for u in librispeech.iter_utterances(TREE)]


@pytest.mark.slow  # a subprocess
@needs_realspeech
def test_a_local_mirror_folder_offers_subsets_the_catalogue_does_not_list(tmp_path):
    assert librispeech.mirror_subsets(str(MIRROR)) == ["dev-real"]
    assert "dev-real" in librispeech.subset_names(str(MIRROR))
    assert librispeech.mirror_subsets("https://www.openslr.org/resources/12") == []
    assert librispeech.mirror_subsets(str(tmp_path / "missing")) == []
    tree = librispeech.fetch_subset("dev-real", str(MIRROR), tmp_path, progress=False)
    assert tree == TREE
    with pytest.raises(librispeech.LibriSpeechError, match="unknown LibriSpeech subset"):
        librispeech.fetch_subset("dev-real", str(tmp_path), tmp_path, progress=False)
    # make demo reads LIBRISPEECH_MIRROR when the partitions are defined.
    code = "from audio_pipeline.partitions import librispeech_subsets as s\n"
    code += "print(s.get_partition_keys())"
    env = os.environ | {"LIBRISPEECH_MIRROR": str(MIRROR)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "'dev-real'" in out and "'dev-clean'" in out


@pytest.mark.slow
@needs_realspeech
def test_pipeline_wer_on_real_speech_is_within_0_3_points_of_faster_whisper_alone(
    home, instance, private_ray
):
    """The default job (ctranslate2, packing on) against faster-whisper's own loop, same model."""
    from faster_whisper import WhisperModel

    corpus = _corpus()
    assert len(corpus) == 51
    model = WhisperModel(
        resolve_model("bundled:tiny.en", "ctranslate2", None).path,
        device="cpu",
        compute_type="int8",
        cpu_threads=os.cpu_count() or 1,
    )
    alone = []
    for utt, ref in corpus:
        segments, _ = model.transcribe(str(utt.audio), beam_size=1, language="en")
        alone.append((ref, " ".join(s.text.strip() for s in segments)))
    engine_wer = corpus_wer(alone)
    del model

    res = make_resources(home, ray_compute=private_ray, mirror=str(MIRROR))
    # The stage and manifest as librispeech_audio[dev-real] leaves them (that partition exists
    # only where LIBRISPEECH_MIRROR names the folder when the definitions load; see above).
    rows = []
    for utt, ref in corpus:
        dest = home / "stage" / utt.relative_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(utt.audio, dest)
        rows.append((utt, ref))
    store = res["store"]
    store.ensure_tables()
    store.register_files(
        [
            {
                "file_path": u.relative_path,
                "size_bytes": u.audio.stat().st_size,
                "batch_key": "librispeech-dev-real",
                "source": "librispeech:dev-real",
            }
            for u, _ in rows
        ]
    )
    store.load_references(
        [{"utterance_id": u.utterance_id, "file_path": u.relative_path, "text": r} for u, r in rows]
    )
    instance.add_dynamic_partitions(transcript_batches.name, ["librispeech-dev-real"])
    result = dg.materialize(
        ASSETS,
        selection=["transcripts"],
        partition_key="librispeech-dev-real",
        resources=res,
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node("transcripts")[-1].metadata.items()
    }
    assert (meta["files"], meta["ok"], meta["errors"]) == (51, 51, 0)
    texts = dict(store.query("SELECT file_path, text FROM transcripts WHERE status = 'ok'"))
    pipeline_wer = corpus_wer((r, texts[u.relative_path]) for u, r in rows)
    assert abs(pipeline_wer * 100 - meta["wer_percent"]) < 0.1
    print(f"real speech: pipeline WER {pipeline_wer:.4f}, faster-whisper alone {engine_wer:.4f}")
    assert pipeline_wer <= engine_wer + 0.003, (pipeline_wer, engine_wer)


@pytest.mark.slow
@needs_realspeech
def test_bench_runs_on_three_real_files_and_writes_its_results(tmp_path):
    out = tmp_path / "bench" / "results.json"
    cmd = [sys.executable, "-m", "tools.bench.throughput", "--rounds", "1"]
    cmd += ["--files", "3", "--min-minutes", "0", "--corpus", str(TREE), "--out", str(out)]
    cmd += ["--shapes", "short"]  # the long and large shapes take minutes per variant
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    whole = json.loads(out.read_text())
    assert list(whole["shapes"]) == ["short"] and whole["ray_head_idle_mb"] > 0
    report = whole["shapes"]["short"]
    assert report["corpus"]["name"] == "dev-real" and report["corpus"]["files"] == 3
    assert report["corpus"]["audio_s"] > 5 and report["rounds"] == 1
    assert set(report["variants"]) == {"pipeline", "faster_whisper", "seed_style"}
    for name, v in report["variants"].items():
        assert v["median_wall_s"] > 0 and v["x_real_time"] > 0, name
        assert 0 <= v["wer"] < 0.5 and v["errors"] == 0, name
        assert v["peak_memory_mb"] > 50 and len(v["walls_s"]) == 1, name
        assert len(v["load_1m"]) == 1, name
    assert set(report["ratios"]) == {"pipeline_over_faster_whisper", "pipeline_over_seed_style"}


@needs_realspeech
def test_bench_shapes_are_short_clips_the_long_form_set_and_a_large_job(tmp_path):
    from tools.bench.throughput import main, shape_files

    args = SimpleNamespace(min_minutes=10, large_minutes=30, files=None)
    short = shape_files("short", TREE, tmp_path, args)
    long = shape_files("long", TREE, tmp_path, args)
    large = shape_files("large", TREE, tmp_path, args)
    assert 600 <= sum(f.duration_s for f in short) < 700
    assert sum(f.duration_s for f in large) >= 1800
    assert len({f.stage_path for f in large}) == len(large)  # copies in folders of their own
    # Long files: every utterance once, chapters joined, each file at least 3 minutes.
    utterances = _corpus()
    assert len(long) == 2 and all(f.duration_s >= 180 for f in long)
    assert sum(f.duration_s for f in long) == pytest.approx(sum(f.duration_s for f in short[:51]))
    assert " ".join(f.reference for f in long).split() == " ".join(r for _, r in utterances).split()
    with pytest.raises(SystemExit):
        main(["--shapes", "short,huge"])


@pytest.mark.slow
@needs_realspeech
def test_bench_profile_runs_on_three_real_files_and_accounts_for_the_job(tmp_path):
    out = tmp_path / "profile.json"
    cmd = [sys.executable, "-m", "tools.bench.profile", "--files", "3"]
    cmd += ["--corpus", str(TREE), "--out", str(out)]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    stages = report["stages_s"]
    assert report["files"] == 3 and report["calls_at_once"] >= 1
    for stage in ("read + decode", "features", "encoder", "decoder", "MERGE into DuckDB"):
        assert stage in stages, stage
    assert stages["encoder"] > 0 and stages["model load"] > 0
    # Every second of the job is in one stage or another, and no more than the job took.
    assert abs(sum(stages.values()) - report["job_wall_s"]) < 0.05 * report["job_wall_s"] + 0.1
