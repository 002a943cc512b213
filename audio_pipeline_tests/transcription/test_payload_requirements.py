"""The payload's pinned requirements (transcription/requirements.txt) are enough for its code.

A virtual environment gets exactly the lower bounds of those pins (``>=x`` installed as ``==x``)
plus numpy, installed by uv from PyPI, and runs the payload's pure parts there: settings from
Pipes extras, audio decode/resample of a real FLAC, WER and hallucination heuristics, and the
Pipes stage message writer. Torch-bound parts (the engines) need the runtime image's torch and
are covered by the end-to-end tests. Skipped, saying why, when no package index is reachable.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from audio_pipeline.transcription.librispeech import BUNDLED_ROOT

from ..helpers import TEST_ENVS, build_venv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "audio_pipeline" / "transcription" / "requirements.txt"

PROBE = """
import sys
sys.path.insert(0, {root!r})
sys.modules["dagster"] = None  # the payload imports no dagster but dagster_pipes
import numpy as np
from audio_pipeline.transcription import audio, quality, settings, pipes_stage
s = settings.JobSettings.from_extras({{
    "batch_keys": ["b"], "model": "bundled:tiny.en", "engine": "ctranslate2", "home": "/tmp/h",
    "source": {{"kind": "local", "root": "/tmp"}}, "sink": {{"kind": "duckdb", "path": "/tmp/x"}},
    "decoding": {{"language": "en", "batch_size": 4}},
}})
assert s.to_extras()["decoding"]["batch_size"] == 4
data = open({flac!r}, "rb").read()
a = audio.decode_audio(data, "x.flac")
assert a.samples.dtype == np.float32 and a.duration_s > 1
wer = quality.corpus_wer([("the cat sat", "the cat sat"), ("a b c d", "a b x d")])
assert 0 < wer < 0.2, wer
w = pipes_stage.PipesSnowflakeStageMessageWriter(session=object())
ch = w.make_channel({{"snowflake_stage": "@DB.S.JOB_STAGE/pipes/x", "interval_s": 1}})
assert ch.prefix.endswith("/pipes/x")
import dagster_pipes, librosa, soundfile, transformers
print("versions", dagster_pipes.__version__ if hasattr(dagster_pipes, "__version__") else "",
      librosa.__version__, soundfile.__version__, transformers.__version__)
"""


def minimum_pins() -> list[str]:
    pins = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(==|>=)\s*([0-9][^,<>=\s]*)\S*", line)
        assert m, f"requirements.txt: {line!r} has no lower bound"
        pins.append(f"{m.group(1)}=={m.group(3)}")
    return pins


def test_requirements_have_lower_bounds_and_transformers_supports_dtype():
    pins = dict(p.split("==") for p in minimum_pins())
    assert tuple(int(x) for x in pins["transformers"].split(".")[:2]) >= (4, 56)
    assert {"dagster-pipes", "soundfile", "librosa", "transformers"} <= set(pins)


@pytest.mark.long
def test_pure_parts_run_under_the_minimum_versions(tmp_path_factory):
    pins = minimum_pins()
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    venv = TEST_ENVS / f"minreq-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".ok").exists():
        install = build_venv(venv, ["numpy<2.3", *pins])
        if install.returncode != 0:
            unreachable = ("Failed to fetch", "error sending request", "connection")
            if any(word in install.stderr for word in unreachable):
                pytest.skip(f"no package index reachable: {install.stderr[-300:]}")
            pytest.fail(install.stderr[-3000:])
        (venv / ".ok").write_text("\n".join(pins))
    flac = next(BUNDLED_ROOT.glob("sample/*/*/*.flac"))
    out = subprocess.run(
        [str(python), "-c", PROBE.format(root=str(ROOT), flac=str(flac))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "versions" in out.stdout
