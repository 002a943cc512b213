"""Pipes messages as chunks on a Snowflake stage: the payload side (imports no dagster).

Dagster's blob-store pattern: the writer buffers messages and PUTs them every few seconds as
``<prefix>/<n>.json`` (n = 1, 2, ...; one JSON message per line) on a connection of its own; the
orchestrator reads chunk n+1 only after chunk n. Every message is in exactly one chunk, so it
arrives exactly once and in order, whatever happens to the job's log (start-up noise, the 100 KB
cap of SYSTEM$GET_SERVICE_LOGS, another log source after the container exits). A PUT needs no
warehouse; the stage is the job stage the SDK already uploads the payload to.

The upload thread never dies: a chunk that fails is kept and PUT again (same index, same text:
idempotent) on a new connection, whose login reads the container's token file again, with a
backoff, for as long as the job runs. At the end the last chunks get ``flush_timeout_s``; what
could not be delivered by then is said on stderr (the job's log), never silently dropped.

Outside Snowflake (a Ray Job) the orchestrator asks for nothing of this kind, and messages go to
stdout as usual: :func:`payload_message_writer` picks the writer from the bootstrap params.
"""

from __future__ import annotations

import io
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dagster_pipes import (
    PipesBlobStoreMessageWriter,
    PipesBlobStoreMessageWriterChannel,
    PipesDefaultMessageWriter,
    PipesMessageWriter,
    PipesMessageWriterChannel,
    PipesParams,
)

from . import snowflake_auth

# Params the orchestrator's reader sends (resources/pipes_snowflake.py names the same keys).
STAGE_KEY = "snowflake_stage"  # "@DB.SCHEMA.STAGE/pipes/<id>"
INTERVAL_KEY = "interval_s"
FLUSH_TIMEOUT_KEY = "flush_timeout_s"
NETWORK_TIMEOUT_KEY = "network_timeout_s"
MAX_BACKOFF_KEY = "max_backoff_s"


def chunk_location(prefix: str, index: int) -> str:
    return f"{prefix.rstrip('/')}/{index}.json"


class PipesSnowflakeStageMessageWriterChannel(PipesBlobStoreMessageWriterChannel):
    """Uploads message chunks to ``prefix``; see the module docstring for what it guarantees.

    Args:
        prefix: ``@DB.SCHEMA.STAGE/path`` the chunks go under.
        session: a Snowpark session to PUT with (tests); by default a connector connection of
            the writer's own (never the payload's session, which must stay the only Snowpark
            session for ``get_active_session()``), or the active session outside a container.
        interval: seconds between uploads while the job runs.
        flush_timeout_s: how long the last chunks may take once the payload is done.
        network_timeout_s: the connector's limit for one login or PUT (its own retries).
        max_backoff_s: the longest wait between two attempts at a chunk.
    """

    def __init__(
        self,
        prefix: str,
        session=None,
        *,
        interval: float = 5.0,
        flush_timeout_s: float = 120.0,
        network_timeout_s: float = 60.0,
        max_backoff_s: float = 15.0,
        log: Callable[[str], None] | None = None,
    ):
        super().__init__(interval=interval)
        if not re.fullmatch(r"@[A-Za-z0-9_.$\"]+(/[A-Za-z0-9_.-]+)*", prefix):
            raise ValueError(f"invalid stage prefix for Pipes messages: {prefix!r}")
        self.prefix = prefix
        self.interval_s = float(interval)
        self.flush_timeout_s = float(flush_timeout_s)
        self.network_timeout_s = float(network_timeout_s)
        self.max_backoff_s = float(max_backoff_s)
        self._session = session
        self._conn = None
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.chunks = 0  # delivered
        self.failures = 0  # failed attempts, all chunks
        self.connections = 0  # connections opened (each reads the token file again)
        self.last_error: str | None = None
        self.undelivered = 0  # messages left when the final flush gave up

    # ------------------------------------------------------------------ one attempt
    def _put(self, data: bytes, index: int) -> None:
        if self._session is not None:  # a session given by the caller (tests, outside SPCS)
            self._session.file.put_stream(
                io.BytesIO(data),
                chunk_location(self.prefix, index),
                auto_compress=False,
                overwrite=True,
            )
            return
        if self._conn is None:
            if not snowflake_auth.in_container():  # outside a container: the active session
                from snowflake.snowpark.context import get_active_session

                self._session = get_active_session()
                return self._put(data, index)
            self._conn = snowflake_auth.connect(network_timeout_s=self.network_timeout_s)
            self.connections += 1
        self._conn.cursor().execute(
            f"PUT 'file:///pipes/{int(index)}.json' {self.prefix}/ "
            "AUTO_COMPRESS=FALSE OVERWRITE=TRUE",
            file_stream=io.BytesIO(data),
        )

    def upload_messages_chunk(self, payload: io.StringIO, index: int) -> None:
        """One attempt; a failed one drops the connection (the next logs in with a new token)."""
        try:
            self._put(payload.getvalue().encode(), index)
        except Exception:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing to close cleanly
                pass

    # ------------------------------------------------------------------ the upload thread
    @contextmanager
    def buffered_upload_loop(self) -> Iterator[None]:
        closed = threading.Event()
        thread = threading.Thread(
            target=self.upload_until_closed, args=(closed,), daemon=True, name="pipes-upload"
        )
        thread.start()
        try:
            yield
        finally:
            closed.set()
            started = time.monotonic()
            thread.join(timeout=self.flush_timeout_s)
            took = time.monotonic() - started
            if thread.is_alive():
                self._log(
                    f"pipes: the final flush to {self.prefix} did not finish within "
                    f"{self.flush_timeout_s:.0f} s; {self.chunks} chunk(s) delivered, the rest "
                    f"is lost (last error: {self.last_error})"
                )
            elif self.failures:
                self._log(
                    f"pipes: {self.chunks} chunk(s) delivered to {self.prefix} after "
                    f"{self.failures} failed attempt(s) on {self.connections} connection(s); "
                    f"final flush {took:.1f} s"
                )
            self._drop_connection()

    def upload_until_closed(self, closed: threading.Event) -> None:
        """Upload a chunk every ``interval_s``; keep a failed chunk and retry it (never raise)."""
        index, pending, due = 1, None, time.monotonic() + self.interval_s
        delay = 1.0
        while True:
            if pending is None and (closed.is_set() or time.monotonic() >= due):
                messages = self.flush_messages()
                if messages:
                    pending = "\n".join(json.dumps(m, default=str) for m in messages)
                elif closed.is_set():
                    return
                due = time.monotonic() + self.interval_s
            if pending is None:
                closed.wait(min(1.0, self.interval_s))
                continue
            try:
                self.upload_messages_chunk(io.StringIO(pending), index)
            except Exception as exc:  # the thread must live: this chunk is retried
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                if delay == 1.0:
                    self._log(
                        f"pipes: chunk {index} could not be uploaded ({self.last_error}); "
                        "retrying on a new connection"
                    )
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            if delay > 1.0:
                self._log(f"pipes: chunk {index} uploaded after {self.failures} failure(s)")
            pending, delay = None, 1.0
            self.chunks += 1
            index += 1


class PipesSnowflakeStageMessageWriter(PipesBlobStoreMessageWriter):
    def __init__(self, session=None, *, interval: float = 5.0):
        super().__init__(interval=interval)
        self._session = session

    def make_channel(self, params: PipesParams) -> PipesSnowflakeStageMessageWriterChannel:
        options = {
            key: float(params[key])
            for key in (FLUSH_TIMEOUT_KEY, NETWORK_TIMEOUT_KEY, MAX_BACKOFF_KEY)
            if params.get(key) is not None
        }
        return PipesSnowflakeStageMessageWriterChannel(
            params[STAGE_KEY],
            self._session,
            interval=float(params.get(INTERVAL_KEY, self.interval)),
            **options,
        )


class PayloadMessageWriter(PipesMessageWriter):
    """Stage chunks when the orchestrator asks for them (``snowflake_stage`` in the params),
    stdout otherwise."""

    @contextmanager
    def open(self, params: PipesParams) -> Iterator[PipesMessageWriterChannel]:
        writer = (
            PipesSnowflakeStageMessageWriter()
            if STAGE_KEY in params
            else PipesDefaultMessageWriter()
        )
        with writer.open(params) as channel:
            yield channel


def payload_message_writer() -> PipesMessageWriter:
    return PayloadMessageWriter()
