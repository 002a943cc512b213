"""Content versions on Snowflake SQL (fakesnow server, real connector): the same behaviour as the
DuckDB store in test_dirty_stage.py, from the statements in sql/snowflake."""

from __future__ import annotations

import datetime as dt

from audio_pipeline.resources.warehouse import DuckDBStore, SnowflakeStore
from audio_pipeline.transcription.sinks import DuckDBSink, manifest_row

T0 = dt.datetime(2024, 5, 1, 12, 0, 0)


def transcript(path, version, md5, status="ok"):
    return {
        "file_path": path,
        "model_id": "m",
        "engine": "e",
        "status": status,
        "error": None if status == "ok" else "broken",
        "text": "words" if status == "ok" else None,
        "duration_s": 1.0,
        "run_id": "r",
        "batch_key": "b1",
        "transcribed_at": T0,
        "content_version": version,
        "content_md5": md5,
    }


def exercise(store, sink) -> list:
    """Register, transcribe, change, transcribe again; returns what each step saw."""
    store.ensure_tables()
    seen = []
    store.register_files(
        [manifest_row(p, 10, "b1", "stage", None, T0) for p in ("a.flac", "b.flac")]
    )
    seen.append(sorted(store.known_files(["a.flac", "x.flac"]).items()))
    sink.merge_transcripts([transcript("a.flac", 1, "md5-a1"), transcript("b.flac", 1, None)])
    seen.append([(p.file_path, p.content_version) for p in store.pending_files(["b1"], "m")])
    store.register_changes([manifest_row("a.flac", 12, "b2", "stage", None, T0)])
    seen.append([(p.file_path, p.content_version) for p in store.pending_files(["b2"], "m")])
    seen.append(store.batch_report(["b2"], "m").missing)
    sink.merge_transcripts([transcript("a.flac", 2, "md5-a2", status="error")])
    sink.merge_transcripts([transcript("a.flac", 1, "md5-a1")])  # late, old content
    seen.append(store.pending_files(["b2"], "m"))
    return seen


def test_snowflake_and_duckdb_stores_treat_changed_content_alike(sf_connection, tmp_path):
    sf_store = SnowflakeStore(connection=sf_connection)
    db_store = DuckDBStore(path=str(tmp_path / "w.duckdb"))
    sf_seen = exercise(sf_store, sf_store._sink())
    db_seen = exercise(db_store, DuckDBSink(db_store.path))
    assert sf_seen == db_seen
    assert sf_seen == [
        [("a.flac", (10, T0))],
        [],
        [("a.flac", 2)],
        ["a.flac"],
        [],
    ]
    manifest = "SELECT content_version, content_md5, previous_md5, batch_key FROM audio_files"
    rows = "SELECT status, content_version, content_md5 FROM transcripts WHERE file_path = 'a.flac'"
    for store in (sf_store, db_store):
        assert store.query(manifest + " WHERE file_path = 'a.flac'") == [
            (2, "md5-a2", "md5-a1", "b2")
        ]
        assert store.query(rows) == [("error", 2, "md5-a2")]
