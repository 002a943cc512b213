"""A corpus of bad and unusual inputs, each with the outcome the pipeline must produce.

``python -m tools.badcorpus DIR`` (``make badcorpus``) writes the files and a
``expected.json`` describing each kind: the status it must end with (``ok`` or ``error``), the
reference text for ok files made from speech, and a substring the error must contain. The
speech comes from the bundled sample corpus, re-encoded in memory with soundfile and PyAV.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from audio_pipeline.transcription import librispeech

OVERSIZE_LIMIT_MB = 64


@dataclass
class Case:
    kind: str
    file: str
    status: str  # "ok" | "error" | "any" (ok with partial text, or a clear error)
    reference: str | None = None
    error_contains: str | None = None
    flags: list[str] | None = None
    min_duration_s: float | None = None
    max_wer: float = 0.3  # against ``reference``, for ok files made from speech


def _speech() -> tuple[np.ndarray, str, list[tuple[np.ndarray, str]]]:
    tree = librispeech.BUNDLED_ROOT / "sample"
    refs = {p: t for _, p, t in librispeech.iter_references(tree)}
    clips = [
        (sf.read(u.audio, dtype="float32")[0], refs[u.relative_path])
        for u in librispeech.iter_utterances(tree)
    ]
    first = next(c for c in clips if len(c[0]) < 20 * 16000)
    return first[0], first[1], clips


def _encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    import librosa

    return librosa.resample(x, orig_sr=16000, target_sr=rate).astype(np.float32)


def _m4a(samples: np.ndarray, rate: int) -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def generate(dest: Path, long_minutes: float = 20.0) -> list[Case]:
    dest.mkdir(parents=True, exist_ok=True)
    speech, text, clips = _speech()
    flac = _encode(speech, 16000, "FLAC")
    cases: list[tuple[Case, bytes | None]] = [
        (Case("truncated_flac", "truncated.flac", "any", text), flac[: len(flac) // 2]),
        (Case("zero_bytes", "zero-bytes.flac", "error", error_contains="empty file"), b""),
        (
            Case("text_named_flac", "text-file.flac", "error", error_contains="cannot decode"),
            b"This is a text file that only pretends to be audio.\n" * 20,
        ),
        (
            Case("random_bytes_wav", "random.wav", "error", error_contains="supported formats"),
            np.random.default_rng(7).bytes(50_000),
        ),
        (Case("wav_pcm16", "speech.wav", "ok", text), _encode(speech, 16000, "WAV", "PCM_16")),
        (Case("ogg_vorbis", "speech.ogg", "ok", text), _encode(speech, 16000, "OGG", "VORBIS")),
        (Case("mp3", "speech.mp3", "ok", text), _encode(speech, 16000, "MP3")),
        (Case("m4a_aac", "speech.m4a", "ok", text), _m4a(speech, 16000)),
        (
            Case("stereo_44k", "stereo-44k.wav", "ok", text),
            _encode(np.stack([_resample(speech, 44100)] * 2, axis=1), 44100, "WAV", "PCM_16"),
        ),
        (
            # 8 kHz keeps only the telephone band: tiny.en loses some words.
            Case("telephone_8k", "telephone-8k.wav", "ok", text, max_wer=0.5),
            _encode(_resample(speech, 8000), 8000, "WAV", "PCM_16"),
        ),
        (Case("pcm_8bit", "pcm-8bit.wav", "ok", text), _encode(speech, 16000, "WAV", "PCM_U8")),
        (Case("float32", "float32.wav", "ok", text), _encode(speech, 16000, "WAV", "FLOAT")),
        (
            Case(
                "silence_10min",
                "silence-10min.flac",
                "ok",
                "",
                flags=["silence"],
                min_duration_s=599,
            ),
            _encode(np.zeros(16000 * 600, dtype=np.float32), 16000, "FLAC"),
        ),
        (
            Case("odd_name", "-odd name 'quoted' \"dq\"; ünïcødé 日本.flac", "ok", text),
            flac,
        ),
        (
            Case("oversize", "oversize.wav", "error", error_contains="byte limit"),
            None,  # written sparse below
        ),
    ]
    if long_minutes > 0:
        pieces, words, total = [], [], 0
        gap = np.zeros(8000, dtype=np.float32)
        while total < long_minutes * 60 * 16000:
            for samples, ref in clips:
                pieces += [samples, gap]
                words.append(ref)
                total += len(samples) + len(gap)
                if total >= long_minutes * 60 * 16000:
                    break
        long = np.concatenate(pieces)
        cases.append(
            (
                Case(
                    f"long_{long_minutes:g}min",
                    f"long-{long_minutes:g}min.flac",
                    "ok",
                    " ".join(words),
                    min_duration_s=long_minutes * 60 - 1,
                ),
                _encode(long, 16000, "FLAC"),
            )
        )
    for case, data in cases:
        path = dest / case.file
        if data is None:
            with open(path, "wb") as f:  # sparse: no disk space, no memory
                f.truncate((OVERSIZE_LIMIT_MB + 1) * 1024 * 1024)
        else:
            path.write_bytes(data)
    out = [c for c, _ in cases]
    (dest / "expected.json").write_text(
        json.dumps([asdict(c) for c in out], indent=2, ensure_ascii=False)
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.badcorpus")
    parser.add_argument(
        "dest",
        type=Path,
        nargs="?",
        default=Path(os.environ.get("AUDIO_PIPELINE_HOME", ".audio_pipeline"))
        / "stage"
        / "badcorpus",
    )
    parser.add_argument("--long-minutes", type=float, default=20.0)
    args = parser.parse_args(argv)
    cases = generate(args.dest, args.long_minutes)
    for c in cases:
        print(f"{c.kind:16} {c.status:5} {c.file}")
    print(
        f"{len(cases)} kinds written to {args.dest}; transcribe with max_file_mb="
        f"{OVERSIZE_LIMIT_MB} so that oversize.wav is refused"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
