"""The payload's pieces without Ray: settings, decode tasks, the actor class, the DuckDB sink."""

import json

import pytest

from audio_pipeline.transcription.engine import DecodingOptions
from audio_pipeline.transcription.entry import summary_metadata
from audio_pipeline.transcription.models import resolve_model
from audio_pipeline.transcription.pipeline import (
    JobSettings,
    JobSummary,
    Transcriber,
    decode_batch,
    plan_actors,
)
from audio_pipeline.transcription.sinks import DuckDBSink, PendingFile

from ..helpers import SAMPLE_TREE


def test_settings_reject_unknown_keys():
    base = {
        "batch_keys": ["b"],
        "model": "m",
        "engine": "transformers",
        "home": "/h",
        "source": {},
        "sink": {},
    }
    s = JobSettings.from_extras(base | {"decoding": {"num_beams": 2}})
    assert s.decoding == DecodingOptions(num_beams=2)
    with pytest.raises(ValueError, match="unknown job settings"):
        JobSettings.from_extras(base | {"bogus": 1})


@pytest.mark.parametrize(
    "cpus,gpus,expected",
    [
        (2, 0, (1, 2, 0)),
        (8, 0, (2, 4, 0)),
        (16, 0, (4, 4, 0)),
        (16, 2, (2, 7, 1)),
    ],
)
def test_plan_actors(cpus, gpus, expected):
    assert plan_actors(cpus, gpus, None, None) == expected


def test_decode_batch_turns_failures_into_error_values(tmp_path):
    stage = tmp_path / "stage"
    (stage / "a").mkdir(parents=True)
    good = next(SAMPLE_TREE.glob("*/*/*.flac"))
    (stage / "a" / "good.flac").write_bytes(good.read_bytes())
    (stage / "a" / "bad.flac").write_bytes(b"not audio")
    out = decode_batch(
        {
            "file_path": ["a/good.flac", "a/bad.flac", "a/missing.flac", "../escape.flac"],
            "batch_key": ["b"] * 4,
        },
        {"kind": "local", "root": str(stage)},
        max_file_bytes=10**8,
        max_duration_s=3600,
    )
    errors = list(out["decode_error"])
    assert errors[0] == "" and out["duration_s"][0] > 2 and len(out["pcm"][0]) > 0
    assert "cannot decode" in errors[1]
    assert "FileNotFoundError" in errors[2]
    assert "outside the stage" in errors[3]


@pytest.fixture(scope="module")
def tiny_transformers(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    model = resolve_model("bundled:tiny.en", "transformers", home)
    return model


def test_transcriber_actor_gives_one_row_per_file(tmp_path, tiny_transformers):
    stage = tmp_path / "stage"
    stage.mkdir()
    files = sorted(SAMPLE_TREE.glob("1002/*/*.flac"))[:3]
    for f in files:
        (stage / f.name).write_bytes(f.read_bytes())
    (stage / "zero.flac").write_bytes(b"")
    paths = [f.name for f in files] + ["zero.flac"]
    decoded = decode_batch(
        {"file_path": paths, "batch_key": ["b"] * 4},
        {"kind": "local", "root": str(stage)},
        10**8,
        3600,
    )
    actor = Transcriber(
        "transformers",
        tiny_transformers.path,
        "whisper-tiny.en",
        DecodingOptions(),
        run_id="r1",
        threads=2,
    )
    rows = actor(decoded)
    assert rows["file_path"] == paths
    assert rows["status"] == ["ok", "ok", "ok", "error"]
    assert "empty file" in rows["error"][3]
    refs = {}
    for line in next(SAMPLE_TREE.glob("1002/*/*.trans.txt")).read_text().splitlines():
        utt, text = line.split(" ", 1)
        refs[utt + ".flac"] = text
    from audio_pipeline.transcription.quality import corpus_wer

    wer = corpus_wer((refs[p], t) for p, t in zip(paths[:3], rows["text"][:3], strict=True))
    assert wer < 0.25
    assert all(r and r[0]["start"] == 0.0 and r[-1]["end"] > 2 for r in rows["segments"][:3])
    assert set(rows["model_id"]) == {"whisper-tiny.en"} and set(rows["run_id"]) == {"r1"}


def row(path, status, text=None, model="m"):
    import datetime as dt

    return {
        "file_path": path,
        "model_id": model,
        "engine": "transformers",
        "status": status,
        "error": None if status == "ok" else "boom",
        "text": text,
        "language": "en",
        "duration_s": 1.0,
        "segments": [{"start": 0.0, "end": 1.0, "text": text or ""}],
        "run_id": "r",
        "batch_key": "b",
        "transcribed_at": dt.datetime(2026, 1, 1),
    }


def test_duckdb_sink_merges_by_file_and_model(tmp_path):
    sink = DuckDBSink(tmp_path / "w.duckdb")
    sink.ensure_tables()
    sink.merge_rows(
        "merge_into_audio_files",
        [{"file_path": p, "size_bytes": 1, "batch_key": "b", "source": "t"} for p in "xyz"],
        ("file_path", "size_bytes", "content_md5", "last_modified", "batch_key", "source"),
    )
    assert [f.file_path for f in sink.pending_files(["b"], "m")] == ["x", "y", "z"]
    sink.merge_transcripts([row("x", "ok", "hello"), row("y", "error")])
    sink.merge_transcripts([row("x", "ok", "hello again"), row("y", "error")])
    assert sink.pending_files(["b"], "m") == [PendingFile("z", 1, "b")]
    assert [f.file_path for f in sink.pending_files(["b"], "m", retry_errors=True)] == ["y", "z"]
    assert len(sink.pending_files(["b"], "m", force=True)) == 3
    assert len(sink.pending_files(["b"], "other-model")) == 3
    # an error never replaces an earlier ok transcript
    sink.merge_transcripts([row("x", "error")])
    with sink.connect() as con:
        rows = con.execute(
            "SELECT file_path, status, text, segments FROM transcripts ORDER BY 1"
        ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("x", "ok", "hello again"), ("y", "error", None)]
    assert json.loads(rows[0][3])[0]["text"] == "hello again"


def test_summary_metadata_is_plain_values():
    s = JobSummary(
        files=3,
        ok=2,
        errors=1,
        audio_s=30,
        wall_s=10,
        wer=0.1,
        model_id="m",
        preview=[{"file_path": "a|b", "status": "ok", "text": "x|y"}],
    )
    meta = summary_metadata(s)
    assert meta["x_real_time"] == 3.0 and meta["wer_percent"] == 10.0 and meta["errors"] == 1
    assert meta["preview"]["type"] == "md" and "x\\|y" in meta["preview"]["raw_value"]
