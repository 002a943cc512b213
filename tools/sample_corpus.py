"""Generate the bundled ``sample`` subset: synthetic speech in the LibriSpeech layout.

The corpus is made with Debian's ``espeak-ng`` (speech with known text) and ``sox`` (16 kHz mono
FLAC), so it needs no network and its references are exact. The generated files are committed
under ``audio_pipeline/data/LibriSpeech/sample``; regenerate them with::

    python -m tools.sample_corpus            # or: make sample-corpus

Speakers are espeak voices, chapters are groups of sentences, and one utterance is longer than
40 s so that long-form decoding is exercised.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from audio_pipeline.transcription.librispeech import BUNDLED_ROOT

SAMPLE_ROOT = BUNDLED_ROOT / "sample"

# (speaker id, espeak voice, words per minute)
SPEAKERS = {"1001": ("en-us", 150), "1002": ("en", 145), "1003": ("en-us+m3", 150)}

UTTERANCES: dict[tuple[str, str], list[str]] = {
    ("1001", "128104"): [
        "The river ran quietly past the old mill where the children played every summer.",
        "She opened the letter slowly and read it twice before she said a word.",
        "A cold wind came down from the hills and the farmers brought their sheep inside.",
        "He wanted to learn how the engine worked so he took it apart on the kitchen table.",
        "The library was closed on Sunday, but the garden behind it was always open.",
        "Nobody knew where the old captain had hidden the map of the island.",
        "Please bring your own lunch because the market will not be open tomorrow.",
    ],
    ("1002", "140270"): [
        "The train left the station at seven and arrived in the city just after noon.",
        "My grandmother kept a small notebook with recipes written in pencil.",
        "They walked along the beach until the sun went down behind the lighthouse.",
        "The doctor told him to rest for a week and to drink plenty of water.",
        "Every morning the baker opened his shop before the streets were awake.",
        "The students listened carefully while the teacher explained the experiment.",
        "It was the first time she had seen snow falling on the mountains.",
    ],
    ("1003", "152506"): [
        "The ship sailed north for many days without seeing any land.",
        "He painted the fence white and then sat down to watch it dry.",
        "Our neighbours planted apple trees along the edge of the field.",
        "The meeting was moved to Thursday because the manager was travelling.",
        "She found a silver coin in the pocket of her winter coat.",
        "The clock in the tower struck twelve and the whole town was silent.",
        "When the rain stopped, the birds began to sing again in the garden.",
    ],
}

LONG_UTTERANCE = (
    ("1001", "128105"),
    (
        "In the early days of the railway, the journey from the coast to the capital took "
        "almost two full days, and travellers carried baskets of bread, cheese and fruit to "
        "last them through the long hours in the carriage. The engines were loud and slow, and "
        "the smoke from the chimney drifted back through the open windows, so that everyone "
        "arrived with grey dust on their clothes. Still, people loved the railway, because for "
        "the first time a farmer could sell his vegetables in a distant market, and a young "
        "teacher could visit her family at the end of every season. Towns grew up around the "
        "stations, with hotels, shops and small restaurants, and the timetable on the wall "
        "became the most important notice in the whole village."
    ),
)


def reference_text(sentence: str) -> str:
    """LibriSpeech style: upper case, apostrophes kept, other punctuation removed."""
    return " ".join(re.sub(r"[^A-Z' ]+", " ", sentence.upper()).split())


def synthesize(text: str, voice: str, wpm: int, out_flac: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav), text], check=True)
        subprocess.run(
            ["sox", str(wav), "-r", "16000", "-c", "1", "-b", "16", str(out_flac)], check=True
        )


def generate(root: Path = SAMPLE_ROOT) -> int:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required: apt-get install -y espeak-ng sox")
    if root.exists():
        shutil.rmtree(root)
    chapters = dict(UTTERANCES)
    chapters[LONG_UTTERANCE[0]] = [LONG_UTTERANCE[1]]
    count = 0
    for (speaker, chapter), sentences in sorted(chapters.items()):
        voice, wpm = SPEAKERS[speaker]
        folder = root / speaker / chapter
        folder.mkdir(parents=True)
        lines = []
        for i, sentence in enumerate(sentences):
            utt = f"{speaker}-{chapter}-{i:04d}"
            synthesize(sentence, voice, wpm, folder / f"{utt}.flac")
            lines.append(f"{utt} {reference_text(sentence)}")
            count += 1
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=SAMPLE_ROOT)
    args = parser.parse_args()
    n = generate(args.root)
    print(f"wrote {n} utterances under {args.root}")


if __name__ == "__main__":
    main()
