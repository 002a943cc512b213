"""Packing short clips into shared windows, and splitting the segments back."""

from audio_pipeline.transcription.packing import Placement, attribute, pack


def test_pack_first_fit_decreasing_respects_window_and_gaps():
    windows = pack([10, 5, 20, 8, 3], window=25, gap=1)
    assert windows == [
        [Placement(2, 0, 20), Placement(4, 21, 3)],
        [Placement(0, 0, 10), Placement(3, 11, 8), Placement(1, 20, 5)],
    ]
    for w in windows:
        assert max(p.start + p.length for p in w) <= 25
        starts = sorted((p.start, p.start + p.length) for p in w)
        assert all(b + 1 <= c for (_, b), (c, _) in zip(starts, starts[1:], strict=False))
    assert sorted(p.index for w in windows for p in w) == [0, 1, 2, 3, 4]


def test_attribute_assigns_by_overlap_and_refuses_straddling_segments():
    spans = [(0.0, 4.0), (5.0, 9.0), (10.0, 12.0)]
    segments = [
        (0.0, 2.0, "a"),
        (2.0, 4.4, "b"),
        (5.1, 8.8, "c"),
        (9.3, 9.6, "gap"),
        (10.0, 12.0, "d"),
    ]
    assert attribute(segments, spans) == [[0, 1], [2, 3], [4]]
    assert attribute([(3.0, 6.5, "both")], spans) is None
    assert attribute([(3.0, 5.2, "spill")], spans) == [[0], [], []]
