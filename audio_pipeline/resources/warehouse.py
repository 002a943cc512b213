"""The transcript store: manifest, references and transcripts tables."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence

import dagster as dg

from ..transcription import snowflake_sql
from ..transcription.quality import BatchReport
from ..transcription.sinks import (
    AUDIO_FILE_COLUMNS,
    REFERENCE_COLUMNS,
    DuckDBSink,
    PendingFile,
    SnowflakeSink,
)
from .snowflake_connection import SnowflakeConnection


class TranscriptStore(dg.ConfigurableResource, ABC):
    """Tables ``audio_files``, ``reference_transcripts`` and ``transcripts``."""

    @abstractmethod
    def ensure_tables(self) -> None: ...

    @abstractmethod
    def register_files(self, rows: Sequence[dict]) -> int:
        """MERGE manifest rows (``AUDIO_FILE_COLUMNS``); existing files keep their batch."""

    @abstractmethod
    def register_changes(self, rows: Sequence[dict]) -> int:
        """Files whose content changed: a new content version, in the rows' (new) batch."""

    @abstractmethod
    def load_references(self, rows: Sequence[dict]) -> int: ...

    def known_files(self, file_paths: Sequence[str]) -> dict[str, tuple[int, dt.datetime | None]]:
        """``{file_path: (size_bytes, last_modified)}`` of those ``file_paths`` in the manifest."""
        return {p: (size, modified) for p, (size, modified, _) in self.lookup(file_paths).items()}

    @abstractmethod
    def lookup(self, file_paths: Sequence[str]) -> dict[str, tuple[int, dt.datetime | None, str]]:
        """``{file_path: (size_bytes, last_modified, batch_key)}`` of those in the manifest."""

    def folder_digests(self) -> dict[str, tuple[int, int, int | None, list[str]]] | None:
        """``{folder: (files, bytes, sum of last_modified in µs, batch keys)}`` of the manifest;
        None where the store cannot say cheaply."""
        return None

    def unregistered(self, file_paths: Sequence[str]) -> list[str]:
        """The subset of ``file_paths`` not yet in ``audio_files``, in the given order."""
        known = self.known_files(file_paths)
        return [p for p in file_paths if p not in known]

    def for_tick(self) -> TranscriptStore:
        """This store as a sensor tick uses it: waits short enough to fail inside the tick."""
        return self

    @abstractmethod
    def pending_files(
        self,
        batch_keys: Sequence[str],
        model_id: str,
        force: bool = False,
        retry_errors: bool = False,
    ) -> list[PendingFile]: ...

    @abstractmethod
    def batch_report(self, batch_keys: Sequence[str], model_id: str) -> BatchReport: ...

    @abstractmethod
    def payload_spec(self) -> dict:
        """How the payload reaches this store (``transcription.sinks.open_sink``)."""

    @abstractmethod
    def describe(self) -> str: ...


class DuckDBStore(TranscriptStore):
    """A DuckDB file; connections are short-lived so the payload can write between them."""

    path: str
    lock_timeout_s: float = 60.0
    tick_lock_timeout_s: float = 10.0
    threads: int = 0  # DuckDB's worker threads per connection (0: one per core)

    def _sink(self) -> DuckDBSink:
        return DuckDBSink(self.path, lock_timeout_s=self.lock_timeout_s, threads=self.threads)

    def ensure_tables(self) -> None:
        self._sink().ensure_tables()

    def register_files(self, rows):
        return self._sink().merge_rows("merge_into_audio_files", rows, AUDIO_FILE_COLUMNS)

    def register_changes(self, rows):
        return self._sink().merge_rows("merge_changed_audio_files", rows, AUDIO_FILE_COLUMNS)

    def for_tick(self) -> DuckDBStore:
        return DuckDBStore(
            path=self.path,
            lock_timeout_s=min(self.lock_timeout_s, self.tick_lock_timeout_s),
            tick_lock_timeout_s=self.tick_lock_timeout_s,
            threads=1,  # a tick's statements are small; one thread keeps its memory small
        )

    def load_references(self, rows):
        return self._sink().merge_rows("merge_into_reference_transcripts", rows, REFERENCE_COLUMNS)

    def lookup(self, file_paths):
        from ..transcription.sinks import duckdb_temp_rows
        from ..transcription.sql import load_sql

        if not file_paths:
            return {}
        with self._sink().connect() as con:
            candidates = [{"file_path": p} for p in file_paths]
            duckdb_temp_rows(con, "candidates", candidates, ["file_path"])
            rows = con.execute(load_sql("duckdb", "select_known_files")).fetchall()
        return {p: (int(s), m, k) for p, s, m, k in rows}

    def folder_digests(self):
        from ..transcription.sql import load_sql

        with self._sink().connect() as con:
            rows = con.execute(load_sql("duckdb", "select_folder_digests")).fetchall()
        return {
            f: (int(n), int(b), None if m is None else int(m), list(keys))
            for f, n, b, m, keys in rows
        }

    def batch_keys(self):
        rows = self.query(
            "SELECT batch_key FROM audio_files GROUP BY batch_key ORDER BY min(discovered_at), 1"
        )
        return [r[0] for r in rows]

    def pending_files(self, batch_keys, model_id, force=False, retry_errors=False):
        return self._sink().pending_files(batch_keys, model_id, force, retry_errors)

    def batch_report(self, batch_keys, model_id):
        return self._sink().batch_report(batch_keys, model_id)

    def query(self, sql: str, params: dict | None = None) -> list[tuple]:
        with self._sink().connect() as con:
            return con.execute(sql, params or {}).fetchall()

    def payload_spec(self) -> dict:
        return {"kind": "duckdb", "path": self.path, "lock_timeout_s": self.lock_timeout_s}

    def describe(self) -> str:
        return self.path


class SnowflakeStore(TranscriptStore):
    """``AUDIO_FILES``, ``REFERENCE_TRANSCRIPTS`` and ``TRANSCRIPTS`` in a Snowflake schema.

    Writes go through a session-scoped temporary table and one MERGE (``sql/snowflake``); every
    value is a bound parameter, every name a validated, quoted identifier.
    """

    connection: SnowflakeConnection

    def _sink(self) -> SnowflakeSink:
        database, schema = self.connection.schema_fqn
        return SnowflakeSink(database, schema, connect=self.connection.connect)

    def ensure_tables(self) -> None:
        self._sink().ensure_tables()

    def register_files(self, rows):
        return self._sink().merge_rows(
            "audio_files", rows, AUDIO_FILE_COLUMNS, "merge_into_audio_files"
        )

    def register_changes(self, rows):
        return self._sink().merge_rows(
            "audio_files", rows, AUDIO_FILE_COLUMNS, "merge_changed_audio_files"
        )

    def load_references(self, rows):
        return self._sink().merge_rows(
            "references", rows, REFERENCE_COLUMNS, "merge_into_reference_transcripts"
        )

    def lookup(self, file_paths):
        from .stage import _utc_naive

        if not file_paths:
            return {}
        sink = self._sink()
        known: dict[str, tuple[int, dt.datetime | None, str]] = {}
        with self.connection.connect() as conn:
            cur = conn.cursor()
            for i in range(0, len(file_paths), 10_000):
                chunk = snowflake_sql.json_list(file_paths[i : i + 10_000])
                rows = snowflake_sql.execute(
                    cur, "select_registered_files", {"file_paths": chunk}, **sink.names()
                )
                for p, s, m, k in rows:
                    known[str(p)] = (int(s), _utc_naive(m) if m is not None else None, k)
        return known

    def pending_files(self, batch_keys, model_id, force=False, retry_errors=False):
        return self._sink().pending_files(batch_keys, model_id, force, retry_errors)

    def batch_report(self, batch_keys, model_id):
        return self._sink().batch_report(batch_keys, model_id)

    def batch_keys(self):
        return self._sink().batch_keys()

    def query(self, sql: str, params: dict | None = None) -> list[tuple]:
        with self.connection.connect() as conn:
            cur = conn.cursor()
            cur.execute(sql, params)
            return list(cur.fetchall())

    def payload_spec(self) -> dict:
        database, schema = self.connection.schema_fqn
        return {"kind": "snowflake", "database": database, "schema": schema}

    def describe(self) -> str:
        return self.connection.describe()
