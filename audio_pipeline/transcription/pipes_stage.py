"""Pipes messages as chunks on a Snowflake stage: the payload side (imports no dagster).

Dagster's blob-store pattern: the writer buffers messages and PUTs them every few seconds as
``<prefix>/<n>.json`` (n = 1, 2, ...; one JSON message per line) with the job's own Snowpark
session; the orchestrator reads chunk n+1 only after chunk n. Every message is in exactly one
chunk, so it arrives exactly once and in order, whatever happens to the job's log (start-up noise,
the 100 KB cap of SYSTEM$GET_SERVICE_LOGS, another log source after the container exits).
A PUT needs no warehouse; the stage is the job stage the SDK already uploads the payload to.

Outside Snowflake (a Ray Job) the orchestrator asks for nothing of this kind, and messages go to
stdout as usual: :func:`payload_message_writer` picks the writer from the bootstrap params.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dagster_pipes import (
    PipesBlobStoreMessageWriter,
    PipesBlobStoreMessageWriterChannel,
    PipesDefaultMessageWriter,
    PipesMessageWriter,
    PipesMessageWriterChannel,
    PipesParams,
)

STAGE_KEY = "snowflake_stage"  # "@DB.SCHEMA.STAGE/pipes/<id>"
INTERVAL_KEY = "interval_s"


def chunk_location(prefix: str, index: int) -> str:
    return f"{prefix.rstrip('/')}/{index}.json"


class PipesSnowflakeStageMessageWriterChannel(PipesBlobStoreMessageWriterChannel):
    def __init__(self, prefix: str, session=None, *, interval: float = 5.0, retries: int = 6):
        super().__init__(interval=interval)
        if not re.fullmatch(r"@[A-Za-z0-9_.$\"]+(/[A-Za-z0-9_.-]+)*", prefix):
            raise ValueError(f"invalid stage prefix for Pipes messages: {prefix!r}")
        self.prefix = prefix
        self._session = session
        self._conn = None
        self.retries = retries

    def _put(self, data: bytes, index: int) -> None:
        if self._session is not None:  # a session given by the caller (tests)
            self._session.file.put_stream(
                io.BytesIO(data),
                chunk_location(self.prefix, index),
                auto_compress=False,
                overwrite=True,
            )
            return
        if self._conn is None:
            self._conn = _own_connection()
        if self._conn is None:  # outside a container: the active session
            from snowflake.snowpark.context import get_active_session

            self._session = get_active_session()
            return self._put(data, index)
        self._conn.cursor().execute(
            f"PUT 'file:///pipes/{int(index)}.json' {self.prefix}/ "
            "AUTO_COMPRESS=FALSE OVERWRITE=TRUE",
            file_stream=io.BytesIO(data),
        )

    def upload_messages_chunk(self, payload: io.StringIO, index: int) -> None:
        data = payload.getvalue().encode()
        delay = 1.0
        for attempt in range(self.retries):
            try:
                self._put(data, index)
                return
            except Exception:
                if attempt == self.retries - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


class PipesSnowflakeStageMessageWriter(PipesBlobStoreMessageWriter):
    def __init__(self, session=None, *, interval: float = 5.0):
        super().__init__(interval=interval)
        self._session = session

    def make_channel(self, params: PipesParams) -> PipesSnowflakeStageMessageWriterChannel:
        return PipesSnowflakeStageMessageWriterChannel(
            params[STAGE_KEY],
            self._session,
            interval=float(params.get(INTERVAL_KEY, self.interval)),
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


def _own_connection():
    """A connector connection of the writer's own (never the payload's session, which must stay
    the only Snowpark session for ``get_active_session()``): from the container's token file and
    ``SNOWFLAKE_*`` settings; None outside a container."""
    import os
    from pathlib import Path

    token = Path(os.environ.get("SNOWFLAKE_TOKEN_FILE", "/snowflake/session/token"))
    if not (token.is_file() and os.environ.get("SNOWFLAKE_ACCOUNT")):
        return None
    import snowflake.connector

    config = {
        "account": os.environ["SNOWFLAKE_ACCOUNT"],
        "host": os.environ.get("SNOWFLAKE_HOST"),
        "authenticator": "oauth",
        "token": token.read_text().strip(),
        "database": os.environ.get("SNOWFLAKE_DATABASE"),
        "schema": os.environ.get("SNOWFLAKE_SCHEMA"),
    }
    for key in ("port", "protocol"):
        if os.environ.get(f"SNOWFLAKE_{key.upper()}"):
            config[key] = os.environ[f"SNOWFLAKE_{key.upper()}"]
    return snowflake.connector.connect(**{k: v for k, v in config.items() if v})
