"""Where the payload reads its work list and writes transcript rows: DuckDB or Snowflake tables.

DuckDB lets one process write a database file at a time, so every connection here is short and
retried while another process holds the lock.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import quality
from .quality import BatchReport
from .snowflake_auth import payload_connection
from .sql import load_sql

AUDIO_FILE_COLUMNS = (
    "file_path",
    "size_bytes",
    "content_md5",
    "last_modified",
    "batch_key",
    "source",
)
REFERENCE_COLUMNS = ("utterance_id", "file_path", "text")
TRANSCRIPT_COLUMNS = (
    "file_path",
    "model_id",
    "engine",
    "status",
    "error",
    "text",
    "language",
    "duration_s",
    "segments",
    "quality_flags",
    "run_id",
    "batch_key",
    "transcribed_at",
    "content_version",
    "content_md5",
)
# DuckDB types of the columns above, for the views the MERGE statements read.
DUCKDB_TYPES = {
    "file_path": "VARCHAR",
    "size_bytes": "BIGINT",
    "content_md5": "VARCHAR",
    "last_modified": "TIMESTAMP",
    "batch_key": "VARCHAR",
    "source": "VARCHAR",
    "utterance_id": "VARCHAR",
    "text": "VARCHAR",
    "model_id": "VARCHAR",
    "engine": "VARCHAR",
    "status": "VARCHAR",
    "error": "VARCHAR",
    "language": "VARCHAR",
    "duration_s": "DOUBLE",
    "segments": "VARCHAR",
    "quality_flags": "VARCHAR",
    "run_id": "VARCHAR",
    "transcribed_at": "TIMESTAMP",
    "content_version": "INTEGER",
}


def duckdb_temp_rows(con, name: str, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """``rows`` as the temporary table ``name`` of ``con``, passed as list parameters (one per
    column, typed by ``DUCKDB_TYPES``): no pyarrow, pandas or numpy in the process for it, which
    keeps a sensor tick's memory small (issue: the sensor at a million files)."""
    select = ", ".join(
        f'unnest(${i})::{DUCKDB_TYPES[c]} AS "{c}"' for i, c in enumerate(columns, start=1)
    )
    con.execute(f'DROP TABLE IF EXISTS temp."{name}"')
    con.execute(
        f'CREATE TEMP TABLE "{name}" AS SELECT {select}',
        [[r.get(c) for r in rows] for c in columns],
    )


def manifest_row(
    file_path: str,
    size_bytes: int,
    batch_key: str | None,
    source: str,
    content_md5: str | None = None,
    last_modified: dt.datetime | None = None,
) -> dict:
    """One ``audio_files`` row: the only place manifest rows are built (asset, job, sensor)."""
    return {
        "file_path": file_path,
        "size_bytes": int(size_bytes),
        "content_md5": content_md5,
        "last_modified": last_modified,
        "batch_key": batch_key,
        "source": source,
    }


@dataclass(frozen=True)
class PendingFile:
    file_path: str
    size_bytes: int
    batch_key: str
    content_version: int = 1


class TranscriptSink(ABC):
    @abstractmethod
    def pending_files(
        self,
        batch_keys: Sequence[str],
        model_id: str,
        force: bool = False,
        retry_errors: bool = False,
    ) -> list[PendingFile]: ...

    @abstractmethod
    def references(self, file_paths: Sequence[str]) -> dict[str, str]: ...

    @abstractmethod
    def merge_transcripts(self, rows: Sequence[dict]) -> int: ...

    @abstractmethod
    def batch_report(self, batch_keys: Sequence[str], model_id: str) -> BatchReport:
        """Counts, WER and samples for the batches' manifest files and their transcripts."""


class DuckDBLockedError(RuntimeError):
    pass


def lock_holder(message: str) -> str | None:
    """The process named in DuckDB's lock error ("... held in <exe> (PID n)"), with its command."""
    m = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    if not m:
        return None
    exe, pid = m.group(1), m.group(2)
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        command = " ".join(raw.decode(errors="replace").split("\0")).strip()
    except OSError:
        command = ""
    return f"PID {pid} ({command[:200] or exe})"


@contextmanager
def duckdb_connection(
    path: str | Path, read_only: bool = False, lock_timeout_s: float = 60.0, threads: int = 0
) -> Iterator:
    """Open ``path``, retrying while another process holds its write lock; ``threads``: DuckDB's
    worker threads (0: its default, one per core)."""
    import duckdb

    deadline = time.monotonic() + lock_timeout_s
    delay = 0.05
    while True:
        try:
            config = {"threads": threads} if threads else {}
            con = duckdb.connect(str(path), read_only=read_only, config=config)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                if "lock" in str(exc).lower():
                    holder = lock_holder(str(exc)) or "another process"
                    raise DuckDBLockedError(
                        f"{path} stayed locked by {holder} for {lock_timeout_s:.0f} s; a "
                        "connection left open, even read-only, blocks every writer until it "
                        f"is closed ({exc})"
                    ) from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield con
    finally:
        con.close()


class DuckDBSink(TranscriptSink):
    def __init__(self, path: str | Path, lock_timeout_s: float = 60.0, threads: int = 0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.threads = threads

    def connect(self, read_only: bool = False):
        return duckdb_connection(self.path, read_only, self.lock_timeout_s, self.threads)

    def ensure_tables(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.execute(load_sql("duckdb", "create_tables"))

    def pending_files(self, batch_keys, model_id, force=False, retry_errors=False):
        with self.connect() as con:
            rows = con.execute(
                load_sql("duckdb", "select_pending_files"),
                {
                    "batch_keys": list(batch_keys),
                    "model_id": model_id,
                    "force": bool(force),
                    "retry_errors": bool(retry_errors),
                },
            ).fetchall()
        return [PendingFile(p, int(s), b, int(v)) for p, s, b, v in rows]

    def references(self, file_paths):
        with self.connect() as con:
            rows = con.execute(
                load_sql("duckdb", "select_references"), {"file_paths": list(file_paths)}
            ).fetchall()
        return dict(rows)

    def merge_rows(
        self, statement: str | Sequence[str], rows: Sequence[dict], columns: Sequence[str]
    ) -> int:
        """Rows → the temporary table ``incoming`` → each statement, in one transaction."""
        if not rows:
            return 0
        statements = [statement] if isinstance(statement, str) else list(statement)
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            duckdb_temp_rows(con, "incoming", rows, columns)
            for name in statements:
                con.execute(load_sql("duckdb", name))
            con.execute("COMMIT")
        return len(rows)

    def merge_transcripts(self, rows):
        prepared = [json_columns(r) for r in rows]
        return self.merge_rows(
            ("merge_into_transcripts", "update_audio_file_hashes"), prepared, TRANSCRIPT_COLUMNS
        )

    def batch_report(self, batch_keys, model_id):
        with self.connect() as con:
            rows = con.execute(
                load_sql("duckdb", "select_batch_report"),
                {"model_id": model_id, "batch_keys": list(batch_keys)},
            ).fetchall()
        return build_report(rows)


def json_columns(row: dict) -> dict:
    """The row with its list columns as JSON text, as both stores' MERGE statements take them
    (and content version 1 where the row names none)."""
    return row | {
        "segments": json.dumps(row.get("segments") or []),
        "quality_flags": json.dumps(row.get("quality_flags") or []),
        "content_version": int(row.get("content_version") or 1),
    }


def build_report(rows) -> BatchReport:
    """Fold ``select_batch_report`` rows into a :class:`BatchReport`."""
    report = BatchReport(files=len(rows))
    pairs = []
    for path, status, error, text, duration, flags, reference in rows:
        if status is None:
            report.missing.append(path)
            continue
        report.transcribed += 1
        report.audio_s += duration or 0.0
        if json.loads(flags) if isinstance(flags, str) else flags:
            report.flagged += 1
        if status == "ok":
            report.ok += 1
            if reference is not None:
                pairs.append((reference, text or ""))
            if len(report.samples) < 5:
                report.samples.append({"file_path": path, "text": text, "reference": reference})
        else:
            report.errors += 1
            if len(report.error_samples) < 5:
                report.error_samples.append({"file_path": path, "error": error})
    report.wer = quality.corpus_wer(pairs)
    report.wer_files = len(pairs)
    return report


def open_sink(spec: dict) -> TranscriptSink:
    kind = spec.get("kind")
    if kind == "duckdb":
        sink = DuckDBSink(spec["path"], lock_timeout_s=float(spec.get("lock_timeout_s", 60)))
        sink.ensure_tables()
        return sink
    if kind == "snowflake":
        sink = SnowflakeSink(spec["database"], spec["schema"])
        sink.ensure_tables()
        return sink
    raise ValueError(f"unknown transcript sink kind {kind!r}")


def _plain(value):
    """numpy/pandas scalars → Python values the connector binds."""
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


class SnowflakeSink(TranscriptSink):
    """Tables ``AUDIO_FILES``, ``REFERENCE_TRANSCRIPTS``, ``TRANSCRIPTS`` in one schema.

    Rows go into a session-scoped temporary table (so, scoped to this run's connection) and reach
    the target in one MERGE per call: a job killed half-way keeps every block already merged.
    ``connect`` returns a context manager yielding a ``snowflake.connector`` connection whose
    current schema is ours; by default, inside a Snowflake container, the job's own session.
    """

    TABLES = ("AUDIO_FILES", "REFERENCE_TRANSCRIPTS", "TRANSCRIPTS")

    def __init__(self, database: str, schema: str, connect=None):
        from . import identifiers

        self.database = identifiers.validate(database, "database name")
        self.schema = identifiers.validate(schema, "schema name")
        self._connect = connect or (lambda: payload_connection(self.database, self.schema))

    def names(self) -> dict:
        tables = {t.lower(): (self.database, self.schema, t) for t in self.TABLES}
        return tables | {"schema": (self.database, self.schema)}

    def ensure_tables(self) -> None:
        from . import snowflake_sql

        with self._connect() as conn:
            snowflake_sql.execute(conn.cursor(), "create_tables", **self.names())

    def merge_rows(
        self, entity: str, rows: Sequence[dict], columns: Sequence[str], merge: str | Sequence[str]
    ) -> int:
        """Rows → temporary ``<ENTITY>_INCOMING`` → each ``merge`` file; returns the rows sent."""
        from . import snowflake_sql

        if not rows:
            return 0
        incoming = f"{entity.upper()}_INCOMING"
        prepared = [{c: _plain(r.get(c)) for c in columns} for r in rows]
        with self._connect() as conn:
            cur = conn.cursor()
            snowflake_sql.execute(cur, f"create_{entity}_incoming", incoming=incoming)
            for i in range(0, len(prepared), 1000):
                snowflake_sql.executemany(
                    cur, f"insert_{entity}_incoming", prepared[i : i + 1000], incoming=incoming
                )
            for name in [merge] if isinstance(merge, str) else merge:
                snowflake_sql.execute(cur, name, incoming=incoming, **self.names())
        return len(rows)

    def merge_transcripts(self, rows):
        prepared = [json_columns(r) for r in rows]
        return self.merge_rows(
            "transcripts",
            prepared,
            TRANSCRIPT_COLUMNS,
            ("merge_into_transcripts", "update_audio_file_hashes"),
        )

    def batch_report(self, batch_keys, model_id):
        from . import snowflake_sql

        params = {"model_id": model_id, "batch_keys": snowflake_sql.json_list(batch_keys)}
        with self._connect() as conn:
            rows = snowflake_sql.execute(
                conn.cursor(), "select_batch_report", params, **self.names()
            )
        return build_report(rows)

    def batch_keys(self) -> list[str]:
        from . import snowflake_sql

        with self._connect() as conn:
            rows = snowflake_sql.execute(conn.cursor(), "select_batch_keys", **self.names())
        return [str(r[0]) for r in rows]

    def pending_files(self, batch_keys, model_id, force=False, retry_errors=False):
        from . import snowflake_sql

        params = {
            "batch_keys": snowflake_sql.json_list(batch_keys),
            "model_id": model_id,
            "force": bool(force),
            "retry_errors": bool(retry_errors),
        }
        with self._connect() as conn:
            rows = snowflake_sql.execute(
                conn.cursor(), "select_pending_files", params, **self.names()
            )
        return [PendingFile(str(p), int(s), str(b), int(v)) for p, s, b, v in rows]

    def references(self, file_paths):
        from . import snowflake_sql

        if not file_paths:
            return {}
        with self._connect() as conn:
            rows = snowflake_sql.execute(
                conn.cursor(),
                "select_references",
                {"file_paths": snowflake_sql.json_list(file_paths)},
                **self.names(),
            )
        return {str(p): str(t) for p, t in rows}
