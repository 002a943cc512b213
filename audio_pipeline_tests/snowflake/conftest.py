"""Snowflake fixtures: one fakesnow server for the session, real connector and SnowflakeResource.

fakesnow (0.12) serves Snowflake's HTTP protocol on 127.0.0.1 and runs the SQL on DuckDB. It
supports PUT and LIST on stages but not DIRECTORY(), GET, REMOVE or compute pools.
"""

from __future__ import annotations

import logging

import pytest

from audio_pipeline.resources.snowflake_connection import SnowflakeConnection
from tools.snowflake_emulator import fakesnow_http

from ..helpers import _counter, account_connection, create_schema, fake_resource


@pytest.fixture(scope="session")
def fakesnow_server():
    """Connection kwargs of a fakesnow server started for this test session."""
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    with fakesnow_http.server() as kwargs:
        yield kwargs


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


# ------------------------------------------------------------------ the emulated account
@pytest.fixture(scope="session")
def emulated_account(tmp_path_factory, job_cluster):
    """One emulated account for the session (tools/snowflake_emulator).

    Jobs attach to ``job_cluster``."""
    from tools.snowflake_emulator import EmulatedAccount

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
    return {
        "address": multinode_ray.gcs_address,
        "cluster": multinode_ray,
        "worker_logs": multinode_ray.cluster.worker_logs(2),
    }


@pytest.fixture
def acct_connection(emulated_account) -> SnowflakeConnection:
    return account_connection(emulated_account)


@pytest.fixture(scope="session")
def bare_account(tmp_path_factory):
    """An emulated account with no Ray cluster: for what the payload does outside a job (stage
    reads, the Pipes writer), with faults injected at its endpoint."""
    from tools.snowflake_emulator import EmulatedAccount

    account = EmulatedAccount(tmp_path_factory.mktemp("bare-account"))
    account.start()
    yield account
    account.stop()
