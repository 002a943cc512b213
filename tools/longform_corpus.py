"""A long-form set from LibriSpeech-style utterances: chapters joined, references joined.

``python -m tools.longform_corpus SRC DEST`` reads ``SRC/LibriSpeech/<subset>/`` (default the
real-speech set's ``dev-real``) and writes ``DEST/LibriSpeech/<subset>-long/``: each file is whole
chapters' utterances back to back (each utterance keeps the pauses it was cut with), at least
``--min-minutes`` long, with one reference line per file. It is a LibriSpeech tree, so
``LIBRISPEECH_MIRROR=DEST make demo SUBSET=dev-real-long`` ingests it with its references.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SPEAKER = "9000"  # the long files' made-up speaker and chapter folders


def chapters(tree: Path) -> list[tuple[list[Path], list[str]]]:
    """Each chapter's FLACs and reference lines, in the order of their utterance ids."""
    out = []
    for trans in sorted(tree.glob("*/*/*.trans.txt")):
        refs = dict(
            line.strip().split(" ", 1) for line in trans.read_text().splitlines() if line.strip()
        )
        ids = sorted(refs)
        out.append(([trans.parent / f"{u}.flac" for u in ids], [refs[u] for u in ids]))
    return out


def build(src_tree: Path, dest_root: Path, min_s: float = 180.0, name: str | None = None) -> Path:
    """Write the long-form tree; returns it. Files are chapters joined until ``min_s``; what is
    left at the end joins the last file."""
    import soundfile as sf

    subset = name or f"{src_tree.name}-long"
    groups: list[tuple[list[np.ndarray], list[str]]] = []
    audio: list[np.ndarray] = []
    refs: list[str] = []
    rate = None
    for flacs, texts in chapters(src_tree):
        for flac in flacs:
            data, sr = sf.read(flac, dtype="float32")
            if rate not in (None, sr):
                raise ValueError(f"{flac}: {sr} Hz where the others are {rate} Hz")
            rate = sr
            audio.append(data)
        refs += texts
        if sum(len(a) for a in audio) >= min_s * rate:
            groups.append((audio, refs))
            audio, refs = [], []
    if audio:
        if groups:
            groups[-1][0].extend(audio)
            groups[-1][1].extend(refs)
        else:
            groups.append((audio, refs))
    tree = dest_root / "LibriSpeech" / subset
    for k, (parts, texts) in enumerate(groups):
        chapter = tree / SPEAKER / str(k)
        chapter.mkdir(parents=True, exist_ok=True)
        utt = f"{SPEAKER}-{k}-0000"
        sf.write(chapter / f"{utt}.flac", np.concatenate(parts), rate, subtype="PCM_16")
        (chapter / f"{SPEAKER}-{k}.trans.txt").write_text(f"{utt} {' '.join(texts)}\n")
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.longform_corpus", description=__doc__)
    parser.add_argument("src", nargs="?", default="../shared/data/realspeech")
    parser.add_argument("dest", nargs="?", default=".audio_pipeline/longform")
    parser.add_argument("--subset", default="dev-real")
    parser.add_argument("--min-minutes", type=float, default=3.0)
    args = parser.parse_args(argv)
    tree = build(
        Path(args.src) / "LibriSpeech" / args.subset, Path(args.dest), args.min_minutes * 60
    )
    print(f"{tree}: {len(list(tree.glob('*/*/*.flac')))} file(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
