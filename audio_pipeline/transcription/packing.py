"""Packing short clips into shared 30 s windows (the encoder's fixed input).

Whisper's encoder always processes a 30 s window, so a 5 s clip pays for 30 s of encoder work.
Packing several clips, separated by silence, into one window and splitting the timestamped
segments back by position cuts that cost several times over. A window whose segments cannot be
attributed unambiguously (a segment straddling two clips, a clip left without text) is
transcribed again clip by clip, and so is a clip whose share looks incomplete (:func:`doubtful`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    index: int  # position of the clip in the caller's list
    start: int  # first sample of the clip inside the window
    length: int  # samples


def pack(lengths: list[int], window: int, gap: int) -> list[list[Placement]]:
    """First-fit decreasing: clips (by sample count) into windows of ``window`` samples."""
    windows: list[list[Placement]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        n = lengths[i]
        for w, fill in enumerate(used):
            if fill + gap + n <= window:
                windows[w].append(Placement(i, fill + gap, n))
                used[w] = fill + gap + n
                break
        else:
            windows.append([Placement(i, 0, n)])
            used.append(n)
    return windows


def attribute(
    segments: list[tuple[float, float, str]],
    spans: list[tuple[float, float]],
    tolerance_s: float = 0.3,
) -> list[list[int]] | None:
    """Segment indices per span, or None when a segment straddles two spans.

    A segment belongs to the span it overlaps most; one overlapping a second span by more than
    ``tolerance_s`` is ambiguous. A segment lying wholly in a gap goes to the nearest span.
    """
    owners: list[list[int]] = [[] for _ in spans]
    for k, (start, end, _) in enumerate(segments):
        overlaps = [max(0.0, min(end, b) - max(start, a)) for a, b in spans]
        ranked = sorted(range(len(spans)), key=lambda j: -overlaps[j])
        if len(ranked) > 1 and overlaps[ranked[1]] > tolerance_s:
            return None
        if overlaps[ranked[0]] > 0:
            owners[ranked[0]].append(k)
        else:
            mid = (start + end) / 2
            nearest = min(
                range(len(spans)), key=lambda j: min(abs(mid - spans[j][0]), abs(mid - spans[j][1]))
            )
            owners[nearest].append(k)
    return owners


def doubtful(
    segments: list[tuple[float, float, str]],
    span: tuple[float, float],
    stopped_s: float = float("inf"),
    edge_s: float = 1.5,
) -> bool:
    """True when a clip's share of a packed window may have lost words.

    That is: it got no text; decoding of the window stopped (two closing timestamps) before the
    clip's end, where faster-whisper's own loop would have gone on; or its segments leave more
    than ``edge_s`` of the clip's start or end uncovered (a skipped sentence).
    """
    a, b = span
    texts = [s for s in segments if s[2].strip()]
    if not texts or stopped_s < b:
        return True
    return texts[0][0] > a + edge_s or max(s[1] for s in texts) < b - edge_s
