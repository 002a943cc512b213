"""Long files cut at pauses into pieces that any actor transcribes, stitched back per file.

A file longer than ``long_s`` is cut where Silero VAD (shipped with faster-whisper, offline) hears
no speech, into pieces of at most ``max_s`` seconds: each fits one Whisper window, so any actor on
any node takes it like a short clip, packing included. Where speech runs on with no pause, the
piece goes on to the next pause (the engine then decodes a few windows), and only past
``hard_max_s`` is it cut at its quietest 20 ms. Cutting at pauses measured a lower WER than
faster-whisper's sequential loop on the long-form set (README, "Long files").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE, rms_dbfs

# Columns a piece row carries from decoding to stitching; a short file is one piece of one.
PIECE_COLUMNS = ("piece", "pieces", "offset_s", "file_duration_s", "node_id")
# For planning only: bytes per second of audio, between FLAC (~19 kB/s on speech) and MP3.
EST_BYTES_PER_S = 16_000


@dataclass(frozen=True)
class PieceOptions:
    long_s: float = 30.0  # files longer than this are cut
    max_s: float = 28.0  # a piece's length where a pause allows it
    hard_max_s: float = 90.0  # beyond this, cut at the quietest moment even inside speech


def speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) samples of speech, by Silero VAD."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions(min_silence_duration_ms=160, speech_pad_ms=0)
    found = get_speech_timestamps(audio, opts, sampling_rate=SAMPLE_RATE)
    return [(int(r["start"]), int(r["end"])) for r in found]


def quietest(audio: np.ndarray, lo: int, hi: int, frame: int = SAMPLE_RATE // 50) -> int:
    """The middle of the quietest ``frame`` between samples ``lo`` and ``hi``."""
    span = audio[lo:hi]
    n = len(span) // frame
    if n < 1:
        return hi
    energy = np.square(span[: n * frame].reshape(n, frame), dtype=np.float64).mean(axis=1)
    return lo + int(np.argmin(energy)) * frame + frame // 2


def cut_points(
    regions: list[tuple[int, int]], total: int, max_len: int, hard_max: int, quiet=None
) -> list[int]:
    """Samples to cut at: the middle of pauses, the latest one that keeps a piece within
    ``max_len``; else the next pause within ``hard_max``; else ``quiet(lo, hi)``."""
    gaps = [(e + s) // 2 for (_, e), (s, _) in zip(regions, regions[1:], strict=False) if s > e]
    if regions:  # the silence before the first and after the last word is a pause too
        gaps = [regions[0][0] // 2] + gaps + [(regions[-1][1] + total) // 2]
    cuts, start = [], 0
    while total - start > max_len:
        inside = [m for m in gaps if start < m <= start + max_len]
        later = [m for m in gaps if start + max_len < m < total]
        if inside:
            cut = inside[-1]
        elif later and later[0] - start <= hard_max:
            cut = later[0]
        elif quiet is not None:
            cut = quiet(start + max_len // 2, start + max_len)
        else:
            cut = start + max_len
        cuts.append(cut)
        start = cut
    return cuts


def split(audio: np.ndarray, options: PieceOptions) -> list[tuple[int, int]]:
    """(start, end) samples of the pieces of ``audio``: one piece when it is not long."""
    total = len(audio)
    if total <= options.long_s * SAMPLE_RATE:
        return [(0, total)]
    try:
        regions = speech_regions(audio)
    except Exception:  # no VAD model: energy alone still finds the pauses
        regions = []
    cuts = cut_points(
        regions,
        total,
        int(options.max_s * SAMPLE_RATE),
        int(options.hard_max_s * SAMPLE_RATE),
        quiet=lambda lo, hi: quietest(audio, lo, hi),
    )
    bounds = [0, *cuts, total]
    return list(zip(bounds, bounds[1:], strict=False))


def whole_piece(audio: np.ndarray | None, level: float | None = None) -> dict:
    """A file that is not cut (or could not be decoded: ``audio`` None) as its one piece."""
    audio = np.zeros(0, dtype=np.float32) if audio is None else audio
    duration = len(audio) / SAMPLE_RATE
    return {
        "pcm": audio.tobytes(),
        "duration_s": duration,
        "rms_dbfs": rms_dbfs(audio) if level is None else level,
        "piece": 0,
        "pieces": 1,
        "offset_s": 0.0,
        "file_duration_s": duration,
    }


def piece_rows(audio: np.ndarray, options: PieceOptions) -> list[dict]:
    """The pieces of one decoded file as decode-row values: pcm, duration, level, position."""
    spans = split(audio, options)
    if len(spans) == 1:
        return [whole_piece(audio)]
    duration = len(audio) / SAMPLE_RATE
    return [
        {
            "pcm": audio[a:b].tobytes(),
            "duration_s": (b - a) / SAMPLE_RATE,
            "rms_dbfs": rms_dbfs(audio[a:b]),
            "piece": k,
            "pieces": len(spans),
            "offset_s": a / SAMPLE_RATE,
            "file_duration_s": duration,
        }
        for k, (a, b) in enumerate(spans)
    ]


def estimated_pieces(size_bytes: int, options: PieceOptions) -> int:
    """About how many pieces a file of ``size_bytes`` makes (planning only, never relied on)."""
    seconds = size_bytes / EST_BYTES_PER_S
    if seconds <= options.long_s:
        return 1
    return max(1, math.ceil(seconds / (options.max_s * 0.9)))


def stitch(parts: list[dict]) -> dict:
    """One file's row from its piece rows (any order): text and segments in order, offsets added;
    an error row naming the piece when one failed."""
    parts = sorted(parts, key=lambda r: int(r.get("piece") or 0))
    first = parts[0]
    row = {k: v for k, v in first.items() if k not in PIECE_COLUMNS}
    if len(parts) == 1 and int(first.get("pieces") or 1) == 1:
        return row
    row["duration_s"] = float(first.get("file_duration_s") or sum(p["duration_s"] for p in parts))
    row["transcribed_at"] = max(p["transcribed_at"] for p in parts)
    failed = [p for p in parts if p["status"] != "ok"]
    if failed:
        p = failed[0]
        row.update(
            status="error",
            error=f"piece {int(p['piece']) + 1}/{len(parts)} at {float(p['offset_s']):.1f} s: "
            f"{p['error']}",
            text=None,
            language=None,
            segments=[],
            quality_flags=[],
        )
        return row
    segments, last = [], 0.0
    for p in parts:
        offset, length = float(p["offset_s"]), float(p["duration_s"])
        for s in p.get("segments") or []:
            start = max(last, offset + min(float(s["start"]), length))
            end = max(start, offset + min(float(s["end"]), length))
            segments.append({"start": round(start, 3), "end": round(end, 3), "text": s["text"]})
            last = start
    flags = {f for p in parts for f in (p.get("quality_flags") or [])}
    if not all("silence" in (p.get("quality_flags") or []) for p in parts):
        flags.discard("silence")  # a pause cut out of speech is no silent file
    row.update(
        error=None,
        text=" ".join(p["text"].strip() for p in parts if p.get("text")).strip(),
        language=next((p["language"] for p in parts if p.get("language")), None),
        segments=segments,
        quality_flags=sorted(flags),
    )
    return row


class Stitcher:
    """Collects piece rows as blocks come back; hands back each file's row once it is whole."""

    def __init__(self) -> None:
        self._parts: dict[str, list[dict]] = {}
        self.pieces = 0  # pieces of files that were cut
        self.cut_files = 0
        self.piece_nodes: set[str] = set()

    def add(self, rows: list[dict]) -> list[dict]:
        done = []
        for row in rows:
            n = int(row.get("pieces") or 1)
            if n == 1:
                done.append(stitch([row]))
                continue
            parts = self._parts.setdefault(str(row["file_path"]), [])
            parts.append(row)
            self.pieces += 1
            if row.get("node_id"):
                self.piece_nodes.add(str(row["node_id"]))
            if len(parts) == n:
                done.append(stitch(self._parts.pop(str(row["file_path"]))))
                self.cut_files += 1
        return done

    @property
    def unfinished(self) -> list[str]:
        return sorted(self._parts)
