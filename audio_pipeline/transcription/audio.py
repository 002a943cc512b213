"""Decode, downmix, resample and validate audio held in memory (never through temp files).

libsndfile (via soundfile) decodes FLAC, WAV (8/16/24/32-bit PCM, float), AIFF, OGG/Vorbis, Opus
and MP3 from bytes; MP4/M4A (AAC, ALAC) and WebM/Matroska go through PyAV's bundled FFmpeg,
also from memory. librosa's soxr resampler brings everything to 16 kHz mono float32, the input
Whisper expects. Anything else is refused with the list of supported formats.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
SUPPORTED_EXTENSIONS = (
    ".flac",
    ".wav",
    ".aif",
    ".aiff",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".m4a",
    ".mp4",
    ".aac",
    ".webm",
    ".mka",
)
SUPPORTED_FORMATS = "FLAC, WAV, AIFF, OGG/Vorbis, Opus, MP3, M4A/MP4 (AAC, ALAC), WebM/Matroska"
SILENCE_DBFS = -60.0


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

    @property
    def rms_dbfs(self) -> float:
        return rms_dbfs(self.samples)


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness in dB relative to full scale; -inf-like -200 for digital silence."""
    if samples.size == 0:
        return -200.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * np.log10(rms) if rms > 1e-10 else -200.0


def _looks_like_ffmpeg_container(data: bytes) -> bool:
    return (
        data[4:8] == b"ftyp"  # MP4 / M4A / 3GP
        or data[:4] == b"\x1a\x45\xdf\xa3"  # EBML: WebM / Matroska
        or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0)  # ADTS AAC
    )


def _decode_with_pyav(
    data: bytes, name: str, max_duration_s: float | None
) -> tuple[np.ndarray, int, int]:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{name}: the container holds no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or SAMPLE_RATE
            channels = stream.codec_context.channels or 1
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks, total = [], 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += len(chunk)
                if max_duration_s is not None and total > max_duration_s * SAMPLE_RATE:
                    raise AudioDecodeError(
                        f"{name}: audio exceeds the {max_duration_s:.0f} s limit"
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioDecodeError:
        raise
    except Exception as exc:
        raise AudioDecodeError(f"{name}: cannot decode audio ({exc})") from exc
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return samples.reshape(-1, 1), rate, channels


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
    if _looks_like_ffmpeg_container(data):
        samples, rate, channels = _decode_with_pyav(data, name, max_duration_s)
        return _finish(samples[:, 0], SAMPLE_RATE, rate, channels, name)
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception as exc:  # libsndfile reports unknown and corrupt headers alike
        reason = str(exc).split(": ", 1)[-1]
        raise AudioDecodeError(
            f"{name}: cannot decode audio ({reason}); supported formats: {SUPPORTED_FORMATS}"
        ) from exc
    with f:
        rate, channels, frames = f.samplerate, f.channels, f.frames
        if max_duration_s is not None and frames > max_duration_s * rate:
            raise AudioDecodeError(
                f"{name}: {frames / rate:.0f} s of audio exceeds the {max_duration_s:.0f} s limit"
            )
        try:
            samples = f.read(dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioDecodeError(
                f"{name}: the {f.format} audio data is truncated or corrupt ({exc})"
            ) from exc
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    return _finish(mono, rate, rate, channels, name)


def _finish(
    mono: np.ndarray, rate: int, source_rate: int, channels: int, name: str
) -> DecodedAudio:
    if mono.shape[0] == 0:
        raise AudioDecodeError(f"{name}: no audio frames")
    if rate != SAMPLE_RATE:
        import librosa

        mono = librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise AudioDecodeError(f"{name}: audio holds NaN or infinite samples")
    return DecodedAudio(mono, source_rate, channels)
