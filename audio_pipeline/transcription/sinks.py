"""Where the payload reads its work list and writes transcript rows: DuckDB (Snowflake: later).

DuckDB lets one process write a database file at a time, so every connection here is short and
retried while another process holds the lock.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..sql import load_sql
from . import quality
from .quality import BatchReport

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
)


@dataclass(frozen=True)
class PendingFile:
    file_path: str
    size_bytes: int
    batch_key: str


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


@contextmanager
def duckdb_connection(
    path: str | Path, read_only: bool = False, lock_timeout_s: float = 60.0
) -> Iterator:
    """Open ``path``, retrying while another process holds its write lock."""
    import duckdb

    deadline = time.monotonic() + lock_timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                if "lock" in str(exc).lower():
                    raise DuckDBLockedError(
                        f"{path} stayed locked by another process for {lock_timeout_s:.0f} s: {exc}"
                    ) from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield con
    finally:
        con.close()


class DuckDBSink(TranscriptSink):
    def __init__(self, path: str | Path, lock_timeout_s: float = 60.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    def connect(self, read_only: bool = False):
        return duckdb_connection(self.path, read_only=read_only, lock_timeout_s=self.lock_timeout_s)

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
        return [PendingFile(*r) for r in rows]

    def references(self, file_paths):
        with self.connect() as con:
            rows = con.execute(
                load_sql("duckdb", "select_references"), {"file_paths": list(file_paths)}
            ).fetchall()
        return dict(rows)

    def merge_rows(self, statement: str, rows: Sequence[dict], columns: Sequence[str]) -> int:
        import pyarrow as pa

        if not rows:
            return 0
        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
        with self.connect() as con:
            con.register("incoming", table)
            con.execute(load_sql("duckdb", statement))
            con.unregister("incoming")
        return len(rows)

    def merge_transcripts(self, rows):
        prepared = [
            r
            | {
                "segments": json.dumps(r.get("segments") or []),
                "quality_flags": json.dumps(r.get("quality_flags") or []),
            }
            for r in rows
        ]
        return self.merge_rows("merge_into_transcripts", prepared, TRANSCRIPT_COLUMNS)

    def batch_report(self, batch_keys, model_id):
        with self.connect() as con:
            rows = con.execute(
                load_sql("duckdb", "select_batch_report"),
                {"model_id": model_id, "batch_keys": list(batch_keys)},
            ).fetchall()
        return build_report(rows)


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
    raise ValueError(f"unknown transcript sink kind {kind!r}")
