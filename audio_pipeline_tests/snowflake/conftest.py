"""Snowflake fixtures: one fakesnow server for the session, real connector and SnowflakeResource.

fakesnow (0.12) serves Snowflake's HTTP protocol on 127.0.0.1 and runs the SQL on DuckDB. It
supports PUT and LIST on stages but not DIRECTORY(), GET, REMOVE or compute pools.
"""

from __future__ import annotations

import itertools
import logging

import pytest
from dagster_snowflake import SnowflakeResource

from audio_pipeline.resources.snowflake_connection import SnowflakeConnection
from audio_pipeline.transcription import snowflake_sql

from . import fakesnow_http

SECRET = "pl4nted-Sekret-9f3b"  # planted as the password: must appear in no log or metadata

_counter = itertools.count()


@pytest.fixture(scope="session")
def fakesnow_server():
    """Connection kwargs of a fakesnow server started for this test session."""
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    with fakesnow_http.server() as kwargs:
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
    """Records (sql, params); answers scripted rows for statements fakesnow cannot run.

    ``answers`` maps a statement prefix to ``(column_names, rows)``; a list of those is served
    one per matching call (the last one repeats).
    """

    def __init__(self, answers: dict | None = None):
        self.calls: list[tuple[str, object]] = []
        self.answers = {
            k: list(v) if isinstance(v, list) else [v] for k, v in (answers or {}).items()
        }
        self._result: tuple[list[str], list[tuple]] = ([], [])

    def execute(self, sql, params=None):
        self.calls.append((sql, params))
        self._result = ([], [])
        for prefix, queue in self.answers.items():
            if sql.startswith(prefix):
                self._result = queue.pop(0) if len(queue) > 1 else queue[0]
                break
        return self

    def fetchall(self):
        return list(self._result[1])

    @property
    def description(self):
        return [(name,) for name in self._result[0]]


class RecordingConnection:
    def __init__(self, cursor: RecordingCursor):
        self._cursor = cursor

    def cursor(self):
        return self._cursor


# ------------------------------------------------------------------ the emulated account
@pytest.fixture(scope="session")
def emulated_account(tmp_path_factory, job_cluster):
    """One emulated account for the session (see emulator.py): jobs attach to ``job_cluster``."""
    from .emulator import EmulatedAccount

    account = EmulatedAccount(
        tmp_path_factory.mktemp("account"),
        ray_address=job_cluster["address"],
        worker_logs=job_cluster.get("worker_logs"),
        pending_s=0.5,
    )
    account.start()
    yield account
    account.stop()


@pytest.fixture(scope="session")
def job_cluster(multinode_ray) -> dict:
    """The shared multi-node Ray cluster (head + two worker raylets, one joining late) that
    emulated jobs run on: instance i > 0 of a job is worker raylet i, whose log it shows."""
    head = multinode_ray.head
    worker_logs = [head.state_dir / f"worker-{head.dashboard_port}-{n}.log" for n in (1, 2)]
    return {
        "address": f"127.0.0.1:{head.gcs_port}",
        "cluster": multinode_ray,
        "worker_logs": worker_logs,
    }


def account_connection(account, **kw) -> SnowflakeConnection:
    """A connection to a fresh database on the emulated account, set up by the real setup plan
    (stages, tables, compute pools, network rule, integration, grants) as `make
    snowflake-setup` runs it."""
    from audio_pipeline import snowflake_setup
    from audio_pipeline.resources.compute import SnowflakeMLJobCompute

    connection = SnowflakeConnection(
        resource=fake_resource(account.connection_kwargs()),
        database=f"ACCT_{next(_counter)}",
        schema_name="AUDIO_TRANSCRIPTION_SCH",
        warehouse="ML_MODEL_WH",
    )
    compute = SnowflakeMLJobCompute(connection=connection, **kw)
    steps = snowflake_setup.setup_plan(connection, compute, job_role="SYSADMIN")
    with connection.connect(use_schema=False) as conn:
        snowflake_setup.run_plan(conn.cursor(), steps, echo=lambda _m: None)
    return connection


@pytest.fixture
def acct_connection(emulated_account) -> SnowflakeConnection:
    return account_connection(emulated_account)
