"""Long files: cut at pauses (never inside speech), stitched back in order, one row per file."""

import datetime as dt

import numpy as np
import pytest

from audio_pipeline.transcription.audio import SAMPLE_RATE
from audio_pipeline.transcription.pieces import (
    PieceOptions,
    Stitcher,
    cut_points,
    estimated_pieces,
    piece_rows,
    quietest,
    stitch,
)

SR = SAMPLE_RATE


def s(seconds: float) -> int:
    return int(seconds * SR)


def test_cuts_fall_in_the_middle_of_pauses_and_keep_pieces_within_the_limit():
    # Speech 0-10, 11-20, 21-35, 36-50 s: cuts in the pauses, no piece over 28 s.
    regions = [(s(0), s(10)), (s(11), s(20)), (s(21), s(35)), (s(36), s(50))]
    cuts = cut_points(regions, s(50), s(28), s(90))
    assert cuts == [s(20.5), s(35.5)]
    for cut in cuts:
        assert not any(a < cut < b for a, b in regions)  # never inside speech


def test_speech_longer_than_a_piece_runs_on_to_the_next_pause_then_is_cut_at_its_quietest():
    regions = [(s(0), s(40)), (s(41), s(60))]
    assert cut_points(regions, s(60), s(28), s(90)) == [s(40.5)]  # a 40.5 s piece, not a cut
    audio = np.random.default_rng(0).normal(0, 0.1, s(200)).astype(np.float32)
    audio[s(20) : s(20) + 320] = 0.0  # the quietest 20 ms of the first 14-28 s
    cuts = cut_points([(0, s(200))], s(200), s(28), s(90), lambda a, b: quietest(audio, a, b))
    assert cuts[0] == s(20) + 160
    assert all(b - a <= s(28) for a, b in zip([0, *cuts], [*cuts, s(200)], strict=True))


def test_a_short_file_is_one_piece_and_a_long_one_is_cut_at_its_silences():
    rng = np.random.default_rng(1)
    tone = lambda n: (0.2 * np.sin(np.arange(n) * 0.3) * rng.uniform(0.5, 1, n)).astype(  # noqa: E731
        np.float32
    )
    short = tone(s(12))
    (only,) = piece_rows(short, PieceOptions())
    assert (only["piece"], only["pieces"], only["offset_s"]) == (0, 1, 0.0)
    # 20 s "speech" blocks separated by 1 s of silence: energy finds the pauses without VAD.
    blocks = [tone(s(20)) if k % 2 == 0 else np.zeros(s(1), np.float32) for k in range(7)]
    long = np.concatenate(blocks)
    rows = piece_rows(long, PieceOptions(long_s=30, max_s=28))
    assert [r["piece"] for r in rows] == list(range(len(rows))) and rows[0]["pieces"] == len(rows)
    assert sum(r["duration_s"] for r in rows) == pytest.approx(len(long) / SR)
    assert all(r["duration_s"] <= 28 for r in rows)
    assert all(r["file_duration_s"] == pytest.approx(len(long) / SR) for r in rows)


def test_estimated_pieces_is_one_for_short_files():
    assert estimated_pieces(200_000, PieceOptions()) == 1
    assert estimated_pieces(16_000 * 240, PieceOptions()) == 10


def piece(k, n, offset, text, status="ok", segs=None, flags=()):
    return {
        "file_path": "long.flac",
        "model_id": "m",
        "status": status,
        "error": None if status == "ok" else "boom",
        "text": text,
        "language": "en",
        "duration_s": 25.0,
        "segments": segs if segs is not None else [{"start": 0.5, "end": 24.0, "text": text}],
        "quality_flags": list(flags),
        "transcribed_at": dt.datetime(2026, 1, 1, 0, 0, k),
        "piece": k,
        "pieces": n,
        "offset_s": offset,
        "file_duration_s": 75.0,
        "node_id": f"node{k % 2}",
    }


def test_pieces_are_stitched_in_order_whatever_order_they_come_back_in():
    stitcher = Stitcher()
    assert stitcher.add([piece(2, 3, 50.0, "three"), piece(0, 3, 0.0, "one")]) == []
    (row,) = stitcher.add([piece(1, 3, 25.0, "two")])
    assert row["text"] == "one two three" and row["duration_s"] == 75.0
    assert [(g["start"], g["end"]) for g in row["segments"]] == [
        (0.5, 24.0),
        (25.5, 49.0),
        (50.5, 74.0),
    ]
    assert not set(row) & {"piece", "pieces", "offset_s", "node_id"}
    assert row["transcribed_at"] == dt.datetime(2026, 1, 1, 0, 0, 2)
    assert stitcher.unfinished == [] and stitcher.pieces == 3
    assert stitcher.piece_nodes == {"node0", "node1"}


def test_a_failed_piece_makes_the_file_an_error_row_naming_it():
    row = stitch([piece(0, 2, 0.0, "one"), piece(1, 2, 25.0, None, status="error")])
    assert row["status"] == "error" and row["text"] is None
    assert row["error"] == "piece 2/2 at 25.0 s: boom"


def test_a_silent_piece_of_a_spoken_file_does_not_flag_the_file_silent():
    row = stitch([piece(0, 2, 0.0, "one"), piece(1, 2, 25.0, "", segs=[], flags=["silence"])])
    assert row["text"] == "one" and row["quality_flags"] == []
    quiet = stitch([piece(k, 2, 25.0 * k, "", segs=[], flags=["silence"]) for k in range(2)])
    assert quiet["quality_flags"] == ["silence"]


def test_a_short_file_passes_through_without_piece_columns():
    row = piece(0, 1, 0.0, "hello")
    out = stitch([row])
    assert out["text"] == "hello" and "piece" not in out and out["duration_s"] == 25.0


def test_pieces_share_packed_windows_only_with_their_own_file():
    """A word carried across a packed window's boundary must stay in its own file (the bad-input
    corpus once showed another file's first words at the end of a short clip)."""
    import numpy as np

    from audio_pipeline.transcription.pipeline import _packing_groups

    batch = {
        "file_path": np.array(["a.flac", "long.wav", "b.flac", "long.wav", "other.wav"]),
        "pieces": np.array([1, 3, 1, 3, 2]),
    }
    assert _packing_groups(batch, [0, 1, 2, 3, 4]) == [[0, 2], [1, 3], [4]]
    assert _packing_groups({"file_path": batch["file_path"]}, [0, 2]) == [[0, 2]]
