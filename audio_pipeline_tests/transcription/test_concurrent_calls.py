"""One Whisper actor transcribing several batches at once (ctranslate2 replicas, one thread each):
the plan that chooses it, and the real engine giving the same text from concurrent calls."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from audio_pipeline.transcription.audio import decode_audio
from audio_pipeline.transcription.engine import DecodingOptions, load_engine
from audio_pipeline.transcription.models import resolve_model
from audio_pipeline.transcription.pipeline import JobSettings, plan_calls, rows_per_call

from ..helpers import SAMPLE_TREE


@pytest.mark.parametrize(
    "engine,gpus,threads,calls,expected",
    [
        ("ctranslate2", 0, 2, None, (2, 1)),  # CPU: one single-threaded call per thread
        ("ctranslate2", 0, 4, None, (4, 1)),
        ("ctranslate2", 0, 1, None, (1, 1)),
        ("ctranslate2", 1, 7, None, (1, 7)),  # GPU: one call, all the actor's threads
        ("transformers", 0, 4, None, (1, 4)),  # not thread-safe: one call
        ("ctranslate2", 0, 8, 2, (2, 4)),  # asked for: the threads are shared
        ("transformers", 0, 4, 1, (1, 4)),
    ],
)
def test_plan_calls(engine, gpus, threads, calls, expected):
    assert plan_calls(engine, gpus, threads, calls) == expected


def test_concurrent_calls_need_a_thread_safe_engine():
    with pytest.raises(ValueError, match="needs the ctranslate2 engine"):
        plan_calls("transformers", 0, 4, 2)
    with pytest.raises(ValueError, match="one call at a time"):
        load_engine("transformers", "/nowhere", DecodingOptions(), workers=2)


def _settings(**decoding) -> JobSettings:
    return JobSettings(
        batch_keys=["b"],
        model="m",
        engine="ctranslate2",
        home="/h",
        source={},
        sink={},
        decoding=DecodingOptions(**decoding),
    )


def test_rows_per_call_keeps_every_slot_busy_to_the_end():
    packed = _settings()  # batch_size 8, packing: up to 32 clips per call
    assert rows_per_call(packed) == 32
    assert rows_per_call(packed, files=1000, slots=2) == 32
    # 51 files on 2 slots: calls of 8 (about 6 each) rather than 32 + 19, one slot idle
    assert rows_per_call(packed, files=51, slots=2) == 8
    assert rows_per_call(packed, files=100, slots=2) == 13
    assert rows_per_call(packed, files=3, slots=2) == 8  # never fewer than batch_size
    assert rows_per_call(_settings(pack=False), files=1000, slots=2) == 8


def test_concurrent_calls_give_the_same_text_as_one_call_at_a_time():
    path = resolve_model("bundled:tiny.en", "ctranslate2", None).path
    files = sorted(SAMPLE_TREE.glob("*/*/*.flac"))[:8]
    audios = [decode_audio(f.read_bytes(), f.name).samples for f in files]
    halves = [audios[:4], audios[4:]]
    one = load_engine("ctranslate2", path, DecodingOptions(), threads=2)
    expected = [r.text for half in halves for r in one.transcribe(half)]
    two = load_engine("ctranslate2", path, DecodingOptions(), threads=1, workers=2)
    with ThreadPoolExecutor(2) as pool:
        got = [r.text for results in pool.map(two.transcribe, halves) for r in results]
    assert got == expected
    assert all(got)
