"""Snowflake fixtures: one fakesnow server for the session, real connector and SnowflakeResource.

fakesnow (0.12) serves Snowflake's HTTP protocol on 127.0.0.1 and runs the SQL on DuckDB. It
supports PUT and LIST on stages but not DIRECTORY(), GET, REMOVE or compute pools.
"""

from __future__ import annotations

import itertools
import logging

import pytest
from dagster_snowflake import SnowflakeResource

from audio_pipeline import snowflake_sql
from audio_pipeline.resources.snowflake_connection import SnowflakeConnection

SECRET = "pl4nted-Sekret-9f3b"  # planted as the password: must appear in no log or metadata

_counter = itertools.count()


@pytest.fixture(scope="session")
def fakesnow_server():
    """Connection kwargs of a fakesnow server started for this test session."""
    import fakesnow

    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    with fakesnow.server() as kwargs:
        yield kwargs


def fake_resource(server: dict, password: str = SECRET) -> SnowflakeResource:
    extra = {k: server[k] for k in ("host", "port", "protocol", "session_parameters")}
    return SnowflakeResource(
        account=server["account"],
        user=server["user"],
        password=password,
        network_timeout=5,
        additional_snowflake_connection_args=extra,
    )


def create_schema(connection: SnowflakeConnection) -> None:
    with connection.connect(use_schema=False) as conn:
        cur = conn.cursor()
        snowflake_sql.execute(cur, "create_database", database=connection.database)
        snowflake_sql.execute(cur, "create_schema", schema=connection.schema_fqn)


@pytest.fixture
def sf_connection(fakesnow_server) -> SnowflakeConnection:
    """A connection to a fresh database (own name per test) on the session's fakesnow server."""
    connection = SnowflakeConnection(
        resource=fake_resource(fakesnow_server),
        database=f"TESTDB_{next(_counter)}",
        schema_name="AUDIO_TRANSCRIPTION_SCH",
    )
    create_schema(connection)
    return connection


class RecordingCursor:
    """Records (sql, params) and answers from a script; for statements fakesnow cannot run."""

    def __init__(self, answers: dict[str, list[tuple]] | None = None):
        self.calls: list[tuple[str, object]] = []
        self.answers = answers or {}
        self._rows: list[tuple] = []

    def execute(self, sql, params=None):
        self.calls.append((sql, params))
        self._rows = next((r for k, r in self.answers.items() if sql.startswith(k)), [])
        return self

    def fetchall(self):
        return list(self._rows)

    @property
    def description(self):
        return [("name",), ("state",), ("min_nodes",), ("max_nodes",), ("instance_family",)]


class RecordingConnection:
    def __init__(self, cursor: RecordingCursor):
        self._cursor = cursor

    def cursor(self):
        return self._cursor
