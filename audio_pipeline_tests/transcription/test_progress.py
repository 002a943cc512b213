"""The payload's progress lines: per finished block, and on a timer while nothing finishes."""

import re
import time

from audio_pipeline.transcription.pipeline import Progress


def test_progress_is_logged_on_a_timer_and_per_block_with_rate_and_eta():
    lines: list[str] = []
    with Progress(4, lines.append, interval_s=0.2) as progress:
        time.sleep(0.7)  # a slow start: nothing finished, the timer still reports
        waiting = list(lines)
        progress.add(2, audio_s=30.0)
    assert len(waiting) >= 2
    assert all(ln.startswith("progress: 0/4 files, 0.0x real time, ETA unknown") for ln in waiting)
    done = lines[len(waiting)]
    match = re.match(
        r"progress: 2/4 files, ([\d.]+)x real time, ETA 0:0(\d) \((\d+) s elapsed\)", done
    )
    assert match, done
    assert 30 < float(match[1]) < 60  # 30 s of audio in about 0.7 s
    assert int(match[2]) <= 1
