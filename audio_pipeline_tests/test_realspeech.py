"""Real speech (../shared/data/realspeech beside the repository): mirror subsets, bench (the
pipeline's accuracy on it is checked on the README's dev-real demo, in test_readme).

The real-speech set is 51 LibriSpeech utterances (7.8 min, CC BY 4.0); CI puts a copy of
``shared/`` beside the clone. Without it these tests are skipped, saying where it was looked for.
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from audio_pipeline.transcription import librispeech

from .helpers import MIRROR, REPO_ROOT
from .helpers import REALSPEECH as TREE

needs_realspeech = pytest.mark.skipif(
    not TREE.is_dir(), reason=f"real-speech set not found at {TREE} (copy shared/ beside the repo)"
)


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


@pytest.mark.long
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


@pytest.mark.long
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
