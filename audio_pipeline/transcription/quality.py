"""Text normalisation and word error rate, as Whisper's evaluations compute them."""

from __future__ import annotations

import functools
from collections.abc import Iterable


@functools.cache
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    # No normalizer.json ships with the bundled weights; an empty spelling map keeps the rules.
    return EnglishTextNormalizer({})


def normalize(text: str) -> str:
    return _normalizer()(text)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference words) after Whisper's English normalisation."""
    ref = normalize(reference).split()
    hyp = normalize(hypothesis).split()
    return edit_distance(ref, hyp), len(ref)


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Corpus WER: total word errors over total reference words; None without references."""
    errors = words = 0
    for reference, hypothesis in pairs:
        e, n = word_errors(reference, hypothesis)
        errors += e
        words += n
    return errors / words if words else None
