"""Text normalisation, WER, hallucination heuristics and the transcript quality checks."""

from __future__ import annotations

import functools
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


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


# Whisper's own fallback rule: text that compresses this well is usually a repetition loop.
COMPRESSION_RATIO_LIMIT = 2.4


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def max_ngram_repeats(text: str, n: int = 3) -> int:
    words = text.lower().split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return max(grams.values(), default=0)


def hallucination_flags(text: str, rms_dbfs: float, silence_dbfs: float = -50.0) -> list[str]:
    """Heuristic flags for one transcript; empty when nothing looks wrong."""
    flags = []
    if text and compression_ratio(text) > COMPRESSION_RATIO_LIMIT:
        flags.append("compression_ratio")
    if max_ngram_repeats(text) >= 4:
        flags.append("repeated_ngrams")
    if text.strip() and rms_dbfs < silence_dbfs:
        flags.append("text_on_silence")
    return flags


@dataclass
class BatchReport:
    """The state of a set of batches for one model, read back from the transcript table."""

    files: int = 0
    transcribed: int = 0
    ok: int = 0
    errors: int = 0
    flagged: int = 0
    audio_s: float = 0.0
    wer: float | None = None
    wer_files: int = 0
    missing: list[str] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    error_samples: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class CheckThresholds:
    max_error_rate: float = 0.05
    max_wer: float = 0.25
    max_flagged_rate: float = 0.05


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    severity: str  # "ERROR" | "WARN"
    metadata: dict


CHECK_NAMES = ("completeness", "error_rate", "wer", "hallucinations")


def percent(fraction: float) -> float:
    """Rates and WER are shown as percentages everywhere (metadata, checks, the CLI)."""
    return round(100 * fraction, 2)


def evaluate_checks(report: BatchReport, thresholds: CheckThresholds) -> list[CheckOutcome]:
    """The asset checks of ``transcripts``, computed from a batch report.

    Where no file has a reference transcript, ``wer`` has nothing to measure and no outcome:
    the check gets no result, which Dagster shows as skipped (not passed).
    """
    files = max(report.files, 1)
    error_rate = report.errors / files
    flagged_rate = report.flagged / files
    outcomes = [
        CheckOutcome(
            "completeness",
            not report.missing,
            "ERROR",
            {
                "manifest_files": report.files,
                "rows": report.transcribed,
                "missing": len(report.missing),
                "missing_sample": ", ".join(report.missing[:10]),
            },
        ),
        CheckOutcome(
            "error_rate",
            error_rate <= thresholds.max_error_rate,
            "ERROR",
            {
                "errors": report.errors,
                "error_rate_percent": percent(error_rate),
                "max_error_rate_percent": percent(thresholds.max_error_rate),
            },
        ),
        CheckOutcome(
            "hallucinations",
            flagged_rate <= thresholds.max_flagged_rate,
            "WARN",
            {
                "flagged": report.flagged,
                "flagged_percent": percent(flagged_rate),
                "max_flagged_percent": percent(thresholds.max_flagged_rate),
            },
        ),
    ]
    if report.wer is not None:
        wer = CheckOutcome(
            "wer",
            report.wer <= thresholds.max_wer,
            "WARN",
            {
                "wer_percent": percent(report.wer),
                "files_with_references": report.wer_files,
                "max_wer_percent": percent(thresholds.max_wer),
            },
        )
        outcomes.insert(2, wer)
    return outcomes
