"""Batched and packed decoding lose no words where faster-whisper's own loop would go on."""

from pathlib import Path

import pytest

from audio_pipeline.transcription.audio import decode_audio
from audio_pipeline.transcription.engine import DecodingOptions, load_engine
from audio_pipeline.transcription.models import resolve_model
from audio_pipeline.transcription.packing import doubtful

TREE = Path(__file__).resolve().parents[2].parent / "shared/data/realspeech/LibriSpeech/dev-real"
# Two real utterances. Whether tiny.en's greedy decoding of one window stops early (two closing
# timestamps seconds before the audio ends) depends on the CPU's int8 kernels, so the test
# makes every decoding stop early after its first segment instead of hoping for it.
CLIPS = ("1272/141231/1272-141231-0002.flac", "19/198/19-198-0028.flac")


def _stop_after_first_segment(tokens: list[int], begin: int) -> list[int]:
    """``tokens`` cut after the first segment's closing timestamp, closed twice: the shape of
    a decoding that stopped early."""
    for k in range(1, len(tokens)):
        if tokens[k] >= begin and any(t < begin for t in tokens[1:k]):
            return [*tokens[: k + 1], tokens[k]]
    return tokens


def test_doubtful_shares_of_a_packed_window():
    words = [(0.2, 3.0, "hello there"), (3.0, 5.8, "general")]
    assert not doubtful(words, (0.0, 6.0))
    assert doubtful([], (0.0, 6.0))  # no text
    assert doubtful([(0.2, 1.0, " ")], (0.0, 6.0))  # blank text only
    assert doubtful(words, (0.0, 6.0), stopped_s=4.0)  # decoding stopped inside the clip
    assert not doubtful(words, (0.0, 6.0), stopped_s=6.5)  # ...or after it
    assert doubtful(words[:1], (0.0, 6.0))  # the last 3 s left uncovered
    assert doubtful(words[1:], (0.0, 6.0))  # the first 3 s left uncovered


@pytest.mark.skipif(not TREE.is_dir(), reason=f"real-speech set not found at {TREE}")
@pytest.mark.parametrize("pack", [False, True])
def test_clips_whose_decoding_stops_early_match_faster_whispers_loop(pack):
    from faster_whisper import WhisperModel

    path = resolve_model("bundled:tiny.en", "ctranslate2", None).path
    audios = [decode_audio((TREE / f).read_bytes(), f).samples for f in CLIPS]
    reference = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2)
    expected = [
        " ".join(s.text.strip() for s in reference.transcribe(a, beam_size=1, language="en")[0])
        for a in audios
    ]
    engine = load_engine("ctranslate2", path, DecodingOptions(pack=pack), threads=2)
    generate, begin = engine._generate, engine.tokenizer.timestamp_begin
    stopped = []

    def stopping_early(batch):
        out = [_stop_after_first_segment(t, begin) for t in generate(batch)]
        stopped.extend(engine._stopped_at(t) for t in out)
        return out

    engine._generate = stopping_early
    got = [r.text for r in engine.transcribe(audios)]
    assert stopped and all(s < len(audios[0]) / 16000 - 1 for s in stopped)  # the condition
    assert got == expected  # every word: the clips went on through faster-whisper's loop
    assert got[0].endswith("not worth thinking about.") and "sonnets" in got[1]
