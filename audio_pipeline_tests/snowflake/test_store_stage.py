"""SnowflakeStore and SnowflakeStage against the session's fakesnow server (real connector)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from audio_pipeline.resources.stage import SnowflakeStage
from audio_pipeline.resources.warehouse import SnowflakeStore
from audio_pipeline.transcription import identifiers
from audio_pipeline.transcription.librispeech import BUNDLED_ROOT

SAMPLE = BUNDLED_ROOT / "sample"


def manifest_rows(paths, batch="b1"):
    return [
        {
            "file_path": p,
            "size_bytes": 100 + i,
            "content_md5": f"md5-{i}",
            "last_modified": None,
            "batch_key": batch,
            "source": "librispeech:sample",
        }
        for i, p in enumerate(paths)
    ]


def count(store: SnowflakeStore, table: str) -> int:
    fqn = identifiers.qualified(*store.connection.object_name(table))
    return store.query(f"SELECT COUNT(*) FROM {fqn}")[0][0]


def test_tables_created_with_duckdb_columns(sf_connection):
    store = SnowflakeStore(connection=sf_connection)
    store.ensure_tables()
    store.ensure_tables()  # idempotent
    cols = store.query(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        ("AUDIO_TRANSCRIPTION_SCH",),
    )
    by_table: dict[str, list[str]] = {}
    for table, column in cols:
        by_table.setdefault(table, []).append(column.lower())
    assert by_table == duckdb_columns()  # same columns, same order, as the local store
    assert by_table["TRANSCRIPTS"][:2] == ["file_path", "model_id"]


def duckdb_columns() -> dict[str, list[str]]:
    """Column names per table of sql/duckdb/create_tables.sql."""
    text = (Path(__file__).parents[2] / "sql/duckdb/create_tables.sql").read_text()
    tables: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", line, re.I):
            current = tables.setdefault(m.group(1).upper(), [])
        elif current is not None and (m := re.match(r"\s+(\w+)\s+[A-Za-z]", line)):
            if m.group(1).upper() not in ("PRIMARY", "UNIQUE", "CHECK", "CONSTRAINT"):
                current.append(m.group(1).lower())
    return tables


def test_merges_are_idempotent_and_keep_first_batch(sf_connection):
    store = SnowflakeStore(connection=sf_connection)
    store.ensure_tables()
    paths = ["sample/1/2/a.flac", "sample/1/2/b.flac", "sample/1/3/c.flac"]
    assert store.register_files(manifest_rows(paths)) == 3
    assert store.register_files(manifest_rows(paths, batch="b2")) == 3
    assert count(store, "AUDIO_FILES") == 3
    assert store.query("SELECT DISTINCT batch_key FROM audio_files") == [("b1",)]
    assert store.unregistered(paths + ["x/y.flac"]) == ["x/y.flac"]

    refs = [{"utterance_id": "u1", "file_path": paths[0], "text": "HELLO WORLD"}]
    store.load_references(refs)
    store.load_references(refs)
    assert count(store, "REFERENCE_TRANSCRIPTS") == 1

    pending = store.pending_files(["b1"], "m")
    assert [p.file_path for p in pending] == sorted(paths)
    assert pending[0].size_bytes == 100 and pending[0].batch_key == "b1"

    sink = store._sink()
    now = dt.datetime(2024, 5, 1, 12, 0, 0)
    rows = [
        {
            "file_path": paths[0],
            "model_id": "m",
            "engine": "transformers",
            "status": "ok",
            "error": None,
            "text": "hello world",
            "language": "en",
            "duration_s": 2.5,
            "segments": [{"start": 0.0, "end": 2.5, "text": "hello world"}],
            "run_id": "r1",
            "batch_key": "b1",
            "transcribed_at": now,
        },
        {
            "file_path": paths[1],
            "model_id": "m",
            "engine": "transformers",
            "status": "error",
            "error": "cannot decode",
            "text": None,
            "language": None,
            "duration_s": 0.0,
            "segments": [],
            "run_id": "r1",
            "batch_key": "b1",
            "transcribed_at": now,
        },
    ]
    assert sink.merge_transcripts(rows) == 2
    assert sink.merge_transcripts(rows) == 2  # merge twice → same row count
    assert count(store, "TRANSCRIPTS") == 2
    # an error never replaces an ok transcript
    sink.merge_transcripts([rows[0] | {"status": "error", "error": "late", "text": None}])
    assert store.query(
        "SELECT status, text FROM transcripts WHERE file_path = %s", (paths[0],)
    ) == [("ok", "hello world")]
    assert [p.file_path for p in store.pending_files(["b1"], "m")] == [paths[2]]
    assert [p.file_path for p in store.pending_files(["b1"], "m", retry_errors=True)] == [
        paths[1],
        paths[2],
    ]
    assert len(store.pending_files(["b1"], "m", force=True)) == 3
    assert store.pending_files(["b2"], "m") == []
    assert sink.references(paths) == {paths[0]: "HELLO WORLD"}

    report = store.batch_report(["b1"], "m")
    assert (report.files, report.transcribed, report.ok, report.errors) == (3, 2, 1, 1)
    assert report.audio_s == pytest.approx(2.5)
    assert report.wer == 0.0 and report.wer_files == 1
    assert report.error_samples == [{"file_path": paths[1], "error": "cannot decode"}]
    assert report.missing == [paths[2]]
    assert store.batch_keys() == ["b1"]
    assert store.payload_spec() == {
        "kind": "snowflake",
        "database": sf_connection.database,
        "schema": "AUDIO_TRANSCRIPTION_SCH",
    }


def test_put_and_list_round_trip_keeps_layout(sf_connection, tmp_path):
    """PUT then LIST (fakesnow has no DIRECTORY(): this exercises the LIST fallback)."""
    stage = SnowflakeStage(connection=sf_connection)
    with sf_connection.connect() as conn:
        from audio_pipeline.transcription import snowflake_sql

        snowflake_sql.execute(conn.cursor(), "create_stage", stage=stage.stage_fqn)
    flacs = sorted(SAMPLE.glob("*/*/*.flac"))[:3]
    items = [(f, f"sample/{f.relative_to(SAMPLE).as_posix()}") for f in flacs]
    assert stage.put_file(*items[0]) is True
    stage.close()
    assert stage.put_files(items[1:]) == 2
    # a file whose local name differs from its stage name is PUT under the stage name
    odd = tmp_path / "renamed.flac"
    odd.write_bytes(flacs[0].read_bytes())
    assert stage.put_file(odd, "upload/x/custom-name.flac") is True
    stage.close()

    listed = {f.path: f for f in stage.list_files()}
    assert set(listed) == {p for _, p in items} | {"upload/x/custom-name.flac"}
    first = listed[items[0][1]]
    assert first.size_bytes == flacs[0].stat().st_size
    assert first.md5 and first.last_modified.year >= 2024
    assert [f.path for f in stage.list_files("upload")] == ["upload/x/custom-name.flac"]
    future = dt.datetime(2100, 1, 1)
    assert list(stage.list_new_files(future)) == []
    assert len(list(stage.list_new_files(None))) == 4
    assert stage.payload_spec() == {
        "kind": "snowflake_stage",
        "database": sf_connection.database,
        "schema": "AUDIO_TRANSCRIPTION_SCH",
        "stage": "AUDIO_FILES_STAGE",
    }
    assert (
        stage.describe() == f"@{sf_connection.database}.AUDIO_TRANSCRIPTION_SCH.AUDIO_FILES_STAGE"
    )


def test_put_and_get_commands_are_exact(sf_connection, tmp_path):
    """The PUT/GET text (GET is not supported by fakesnow, so read_bytes is checked as text)."""
    stage = SnowflakeStage(connection=sf_connection, put_parallel=8)
    local = tmp_path / "a b.flac"
    db = sf_connection.database
    assert stage.put_command(local, "dev-clean/84/121123/a b.flac".replace(" ", "_")) == (
        f"PUT 'file://{local.resolve().as_posix()}' "
        f'\'@"{db}"."AUDIO_TRANSCRIPTION_SCH"."AUDIO_FILES_STAGE"/dev-clean/84/121123/\' '
        "AUTO_COMPRESS=FALSE OVERWRITE=FALSE PARALLEL=8"
    )
    assert stage.get_command("dev-clean/84/121123/x.flac", tmp_path) == (
        f'GET \'@"{db}"."AUDIO_TRANSCRIPTION_SCH"."AUDIO_FILES_STAGE"/dev-clean/84/121123/x.flac\' '
        f"'file://{tmp_path.resolve().as_posix()}/'"
    )
    # a name with "--" stays inside the quoted location (unquoted, it would start a comment)
    assert stage.put_command(local, "drop/a--b.flac").endswith(
        '"AUDIO_FILES_STAGE"/drop/\' AUTO_COMPRESS=FALSE OVERWRITE=FALSE PARALLEL=8'
    )
    assert "/drop/a--b.flac' 'file://" in stage.get_command("drop/a--b.flac", tmp_path)
    for bad in ("../etc/passwd", "a/'; DROP TABLE t; --/x.flac", "a b/c.flac"):
        with pytest.raises(identifiers.InvalidIdentifierError, match="invalid stage path"):
            stage.put_command(local, bad)


def test_directory_listing_sql_pushes_down_last_modified(sf_connection):
    """DIRECTORY() is not in fakesnow: the SQL, params and row mapping, on a recording cursor."""
    from ..helpers import RecordingCursor

    stage = SnowflakeStage(connection=sf_connection)
    aware = dt.datetime(2024, 5, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    rows = [("sample/1/2/a.flac", 10, aware, "abc")]
    cursor = RecordingCursor({"SELECT RELATIVE_PATH": (["RELATIVE_PATH"], rows)})
    since = dt.datetime(2024, 5, 1, 11, 0, tzinfo=dt.UTC)
    files = stage._from_directory(cursor, "sample/1", since)
    (refresh, _), (select, params) = cursor.calls
    fqn = f'"{sf_connection.database}"."AUDIO_TRANSCRIPTION_SCH"."AUDIO_FILES_STAGE"'
    assert refresh == f"ALTER STAGE {fqn} REFRESH"
    assert f"FROM DIRECTORY(@{fqn})" in select
    assert "LAST_MODIFIED)::TIMESTAMP_NTZ > %(since)s" in select
    assert params == {"prefix": "sample/1/%", "since": dt.datetime(2024, 5, 1, 11, 0)}
    assert files[0].last_modified == dt.datetime(2024, 5, 1, 12, 0)  # UTC, naive
    assert (files[0].path, files[0].size_bytes, files[0].md5) == ("sample/1/2/a.flac", 10, "abc")
    cursor = RecordingCursor({"SELECT RELATIVE_PATH": (["RELATIVE_PATH"], [])})
    stage._from_directory(cursor, "", None)
    assert cursor.calls[1][1] == {"prefix": "%"} and "since" not in cursor.calls[1][0]


def test_payload_stage_source_from_its_spec():
    """Reads themselves run against the emulated account (test_stage_reads.py)."""
    from audio_pipeline.transcription.sources import SnowflakeStageSource, open_source

    spec = {"kind": "snowflake_stage", "database": "DB", "schema": "SCH", "stage": "S"}
    source = open_source(spec | {"attempts": 5, "network_timeout_s": 7})
    assert isinstance(source, SnowflakeStageSource)
    assert (source.location, source.attempts, source.network_timeout_s) == ('@"DB"."SCH"."S"', 5, 7)
    with pytest.raises(ValueError, match="invalid stage path"):
        source.read_bytes("../secrets.flac")
    with pytest.raises(ValueError, match="invalid Snowflake"):
        open_source(spec | {"stage": 'x"; DROP TABLE t; --'})
