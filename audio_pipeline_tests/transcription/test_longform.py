"""Long files on real speech: the long-form set (dev-real's chapters joined, references joined),
cut at pauses, pieces transcribed like short clips, stitched back; against faster-whisper's loop.

Without Ray: decode tasks, the actor class and the stitcher are called as the Ray Data plan calls
them. The multi-node spread is in ``test_multinode_transcription``.
"""

import numpy as np
import pytest

from audio_pipeline.transcription.engine import DecodingOptions
from audio_pipeline.transcription.models import resolve_model
from audio_pipeline.transcription.pieces import Stitcher
from audio_pipeline.transcription.pipeline import Transcriber, decode_batch
from audio_pipeline.transcription.quality import corpus_wer, word_errors
from tools.longform_corpus import build

from ..helpers import REALSPEECH

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not REALSPEECH.is_dir(), reason=f"real-speech set not found at {REALSPEECH}"
    ),
]


@pytest.fixture(scope="module")
def longform(tmp_path_factory):
    """(stage root, [(stage path, reference)]) of the long-form set, built from dev-real."""
    tree = build(REALSPEECH, tmp_path_factory.mktemp("longform"), min_s=180)
    refs = []
    for trans in sorted(tree.glob("*/*/*.trans.txt")):
        utt, text = trans.read_text().strip().split(" ", 1)
        refs.append((str((trans.parent / f"{utt}.flac").relative_to(tree.parent)), text))
    return tree.parent, refs


@pytest.mark.long
def test_long_files_are_cut_at_pauses_and_stitched_as_accurately_as_faster_whispers_loop(
    longform,
):
    root, refs = longform
    model = resolve_model("bundled:tiny.en", "ctranslate2", None)
    paths = [p for p, _ in refs]
    decoded = decode_batch(
        {"file_path": np.array(paths, dtype=object), "batch_key": np.array(["b"] * len(paths))},
        {"kind": "local", "root": str(root)},
        10**9,
        3600,
        long_file_s=30.0,
    )
    assert all(d >= 180 for d in decoded["file_duration_s"])
    assert max(decoded["duration_s"]) <= 30 and len(decoded["pcm"]) >= 4 * len(paths)
    actor = Transcriber(
        "ctranslate2", model.path, "tiny.en", DecodingOptions(), run_id="r", threads=2
    )
    pieces = actor(decoded)
    # The pieces come back in any order, from any actor: hand them over reversed.
    piece_rows = [
        dict(zip(pieces, vals, strict=True)) for vals in zip(*pieces.values(), strict=True)
    ]
    stitcher = Stitcher()
    rows = stitcher.add(piece_rows[::-1])
    assert stitcher.unfinished == [] and sorted(r["file_path"] for r in rows) == sorted(paths)
    by_path = {r["file_path"]: r for r in rows}
    for path, reference in refs:
        row = by_path[path]
        assert row["status"] == "ok"
        starts = [s["start"] for s in row["segments"]]
        assert starts == sorted(starts) and row["segments"][-1]["end"] > row["duration_s"] - 10
        errors, words = word_errors(reference, row["text"])
        assert errors / words < 0.08  # complete text: nothing of a piece is lost
    cut = corpus_wer([(ref, by_path[p]["text"]) for p, ref in refs])

    # faster-whisper's own loop on the same whole files (greedy, int8, the same 2 threads).
    whole = decode_batch(
        {"file_path": np.array(paths, dtype=object), "batch_key": np.array(["b"] * len(paths))},
        {"kind": "local", "root": str(root)},
        10**9,
        3600,
    )
    loop = []
    for pcm in whole["pcm"]:
        segments, _ = actor.engine.model.transcribe(
            np.frombuffer(pcm, dtype=np.float32), beam_size=1, condition_on_previous_text=True
        )
        loop.append(" ".join(s.text.strip() for s in segments))
    baseline = corpus_wer(list(zip([r for _, r in refs], loop, strict=True)))
    print(f"long-form WER: cut {cut:.4f}, faster-whisper's loop {baseline:.4f}")
    assert cut <= baseline + 0.003
