"""Payload pure functions, without Ray."""

import io

import numpy as np
import pytest
import soundfile as sf

from audio_pipeline.transcription import quality
from audio_pipeline.transcription.audio import SAMPLE_RATE, AudioDecodeError, decode_audio

from ..helpers import SAMPLE_TREE


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def test_flac_from_the_sample_corpus_decodes_unchanged():
    path = next(SAMPLE_TREE.glob("*/*/*.flac"))
    audio = decode_audio(path.read_bytes(), path.name)
    ref, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLE_RATE and audio.source_rate == SAMPLE_RATE
    assert audio.samples.dtype == np.float32 and np.array_equal(audio.samples, ref)


def test_stereo_44k_is_downmixed_and_resampled():
    t = np.arange(44_100 * 2) / 44_100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, left], axis=1).astype(np.float32)
    audio = decode_audio(encode(stereo, 44_100, "WAV", "PCM_16"), "s.wav")
    assert audio.source_channels == 2 and audio.source_rate == 44_100
    assert abs(audio.duration_s - 2.0) < 0.01
    spectrum = np.abs(np.fft.rfft(audio.samples))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(audio.samples)
    assert abs(peak_hz - 440) < 2


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty file"),
        (b"this is a text file, not audio", "cannot decode"),
        (b"fLaC\x00\x00\x00\x22" + bytes(40), "cannot decode"),
    ],
)
def test_bad_bytes_raise_a_clear_error(data, match):
    with pytest.raises(AudioDecodeError, match=match):
        decode_audio(data, "bad.flac")


def test_truncated_flac_is_an_error_or_shorter_audio():
    path = next(SAMPLE_TREE.glob("*/*/*.flac"))
    data = path.read_bytes()
    try:
        audio = decode_audio(data[: len(data) // 3], "cut.flac")
    except AudioDecodeError as exc:
        assert "cut.flac" in str(exc)
    else:
        assert 0 < audio.duration_s < sf.info(path).duration


def test_max_duration_is_enforced_before_decoding():
    data = encode(np.zeros(SAMPLE_RATE * 5, dtype=np.float32), SAMPLE_RATE, "WAV")
    with pytest.raises(AudioDecodeError, match="exceeds the 3 s limit"):
        decode_audio(data, "long.wav", max_duration_s=3)


def test_wer_uses_whisper_normalisation():
    assert quality.corpus_wer([("HELLO WORLD", "Hello, world!")]) == 0.0
    assert quality.corpus_wer([("THE NEIGHBOURS ARE HERE", "The neighbours are here.")]) == 0.0
    assert quality.corpus_wer([("A B C D", "a x c")]) == pytest.approx(0.5)
    assert quality.corpus_wer([("RED GREEN", "red green"), ("BLUE YELLOW", "blue")]) == 0.25
    assert quality.corpus_wer([]) is None
