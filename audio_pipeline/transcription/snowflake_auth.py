"""Snowflake connections of the payload, the one place they are made (imports no dagster).

Inside a Snowpark Container Services container (an ML Job's head and workers) Snowflake mounts an
OAuth token at ``/snowflake/session/token`` and sets ``SNOWFLAKE_HOST``/``SNOWFLAKE_ACCOUNT``;
the token is refreshed in place, so it is read again for every new connection (a connection
opened with an expired token fails its login). Outside a container the payload uses a named
connection (``SNOWFLAKE_CONNECTION_NAME``). No secret travels in the Pipes extras or in Ray task
environments: tasks get the token file's path, never its content.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TOKEN_FILE = "/snowflake/session/token"
# What SPCS sets in every container of a service (and the emulated account in its job processes).
CONTAINER_ENV = (
    "SNOWFLAKE_ACCOUNT",
    "SNOWFLAKE_HOST",
    "SNOWFLAKE_PORT",
    "SNOWFLAKE_PROTOCOL",
    "SNOWFLAKE_DATABASE",
    "SNOWFLAKE_SCHEMA",
    "SNOWFLAKE_WAREHOUSE",
    "SNOWFLAKE_TOKEN_FILE",
    "SNOWFLAKE_SERVICE_NAME",
)


class NoSnowflakeSessionError(RuntimeError):
    """Neither a container's token nor a named connection is available."""


def token_file() -> Path:
    return Path(os.environ.get("SNOWFLAKE_TOKEN_FILE", TOKEN_FILE))


def in_container() -> bool:
    """True where SPCS credentials are present (a token file and the account's host)."""
    return token_file().is_file() and bool(
        os.environ.get("SNOWFLAKE_HOST") or os.environ.get("SNOWFLAKE_ACCOUNT")
    )


def connect_args(
    database: str | None = None,
    schema: str | None = None,
    *,
    network_timeout_s: float | None = None,
) -> dict:
    """Connector keyword arguments for a new connection (the token file read now)."""
    if in_container():
        kwargs = {
            "host": os.environ.get("SNOWFLAKE_HOST"),
            "account": os.environ.get("SNOWFLAKE_ACCOUNT"),
            "authenticator": "oauth",
            "token": token_file().read_text().strip(),
            "warehouse": os.environ.get("SNOWFLAKE_WAREHOUSE"),
        }
        for key in ("port", "protocol"):  # set where the endpoint is not https:443
            if os.environ.get(f"SNOWFLAKE_{key.upper()}"):
                kwargs[key] = os.environ[f"SNOWFLAKE_{key.upper()}"]
    elif os.environ.get("SNOWFLAKE_CONNECTION_NAME"):
        kwargs = {"connection_name": os.environ["SNOWFLAKE_CONNECTION_NAME"]}
    else:
        raise NoSnowflakeSessionError(
            f"no Snowflake session: not in a Snowflake container (no {token_file()} with "
            "SNOWFLAKE_HOST) and SNOWFLAKE_CONNECTION_NAME is not set"
        )
    kwargs["database"] = database or os.environ.get("SNOWFLAKE_DATABASE")
    kwargs["schema"] = schema or os.environ.get("SNOWFLAKE_SCHEMA")
    if network_timeout_s is not None:
        # bounds the connector's own retries of a refused or lost endpoint (else minutes)
        kwargs["network_timeout"] = int(max(1, network_timeout_s))
        kwargs["login_timeout"] = int(max(1, network_timeout_s))
    return {k: v for k, v in kwargs.items() if v is not None and v != ""}


def connect(
    database: str | None = None,
    schema: str | None = None,
    *,
    network_timeout_s: float | None = None,
):
    """A new connector connection of this process's own (see :func:`connect_args`)."""
    import snowflake.connector

    return snowflake.connector.connect(
        **connect_args(database, schema, network_timeout_s=network_timeout_s)
    )


def active_session_connection():
    """The container runtime's Snowpark session connection, or None (none in this process)."""
    try:
        from snowflake.snowpark.context import get_active_session

        return get_active_session().connection
    except Exception:  # no runtime session here (a Ray worker, a plain process)
        return None


def task_env() -> dict[str, str] | None:
    """The container's connection settings for Ray tasks and actors, which open connections of
    their own (the token stays in its file); None outside a container."""
    env = {k: os.environ[k] for k in CONTAINER_ENV if os.environ.get(k)}
    return env or None


def open_payload_connection(database: str, schema: str, *, network_timeout_s: float | None = None):
    """``(connection, owned)`` with ``database.schema`` as its current schema: the container
    runtime's Snowpark session connection where there is one (``owned`` False: it is shared),
    else a new connection (:func:`connect`). No secret travels in the Pipes extras."""
    from . import identifiers

    use = identifiers.render("USE SCHEMA {schema}", schema=(database, schema))
    conn = active_session_connection()
    owned = conn is None
    if owned:
        conn = connect(database, schema, network_timeout_s=network_timeout_s)
    conn.cursor().execute(use)
    return conn, owned


@contextmanager
def payload_connection(database: str, schema: str) -> Iterator:
    """:func:`open_payload_connection` as a context manager (commits and closes what it owns)."""
    conn, owned = open_payload_connection(database, schema)
    try:
        yield conn
        if owned:
            conn.commit()
    finally:
        if owned:
            conn.close()
