"""Decode, downmix, resample and validate audio held in memory (never through temp files).

libsndfile (via soundfile) decodes FLAC, WAV, OGG/Vorbis, Opus and MP3 from bytes; librosa's soxr
resampler brings everything to 16 kHz mono float32, the input Whisper expects.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
SUPPORTED_EXTENSIONS = (".flac", ".wav", ".ogg", ".oga", ".opus", ".mp3")


class AudioDecodeError(ValueError):
    """The bytes are not decodable audio, or the audio is unusable."""


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    source_rate: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode_audio(
    data: bytes, name: str = "<bytes>", max_duration_s: float | None = None
) -> DecodedAudio:
    """Decode ``data`` to 16 kHz mono float32.

    Raises:
        AudioDecodeError: empty input, an unknown or corrupt format, or audio longer than
            ``max_duration_s``.
    """
    import soundfile as sf

    if not data:
        raise AudioDecodeError(f"{name}: empty file (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            if max_duration_s is not None and frames > max_duration_s * rate:
                raise AudioDecodeError(
                    f"{name}: {frames / rate:.0f} s of audio exceeds the "
                    f"{max_duration_s:.0f} s limit"
                )
            samples = f.read(dtype="float32", always_2d=True)
    except AudioDecodeError:
        raise
    except Exception as exc:  # libsndfile reports corrupt and unknown data alike
        raise AudioDecodeError(f"{name}: cannot decode audio ({exc})") from exc
    if samples.shape[0] == 0:
        raise AudioDecodeError(f"{name}: no audio frames")
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    if rate != SAMPLE_RATE:
        import librosa

        mono = librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise AudioDecodeError(f"{name}: audio holds NaN or infinite samples")
    return DecodedAudio(mono, rate, channels)
