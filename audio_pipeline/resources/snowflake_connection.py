"""One Snowflake connection setting shared by the stage, the store and the compute.

Either a ``dagster_snowflake.SnowflakeResource`` (built from ``SNOWFLAKE_*`` env vars through
``dg.EnvVar``) or a named connection of ``~/.snowflake/connections.toml``. A Snowpark session for
ML Jobs is built from the same settings. Secrets stay in the resource: they are never logged,
put in metadata or in exception text (connector errors are re-raised without connection args).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from ..transcription import identifiers

DEFAULT_DATABASE = "MULTINODE_MULTIGPU_MYDB"
DEFAULT_SCHEMA = "AUDIO_TRANSCRIPTION_SCH"
DEFAULT_WAREHOUSE = "ML_MODEL_WH"


class SnowflakeConnection(dg.ConfigurableResource):
    """Where and as whom to connect; ``database``/``schema_name`` qualify every object we touch."""

    # Typed as any resource so that a deployment on the local profile never imports
    # dagster_snowflake (Snowpark, snowflake.core, pandas: about 110 MB in every Dagster process);
    # the profile gives a ``dagster_snowflake.SnowflakeResource`` (profiles.snowflake_connection).
    resource: dg.ConfigurableResource | None = Field(
        default=None,
        description="a dagster_snowflake.SnowflakeResource: credentials from env vars (dg.EnvVar)",
    )
    connection_name: str | None = Field(
        default=None, description="a named connection of ~/.snowflake/connections.toml"
    )
    database: str = DEFAULT_DATABASE
    schema_name: str = DEFAULT_SCHEMA
    warehouse: str = DEFAULT_WAREHOUSE

    def object_name(self, name: str) -> tuple[str, str, str]:
        """``(database, schema, name)``, validated, for ``identifiers.render``."""
        return (
            identifiers.validate(self.database, "database name"),
            identifiers.validate(self.schema_name, "schema name"),
            identifiers.validate(name),
        )

    @property
    def schema_fqn(self) -> tuple[str, str]:
        return (
            identifiers.validate(self.database, "database name"),
            identifiers.validate(self.schema_name, "schema name"),
        )

    def _named_args(self) -> dict:
        return {
            "connection_name": self.connection_name,
            "database": self.database,
            "schema": self.schema_name,
            "warehouse": self.warehouse,
        }

    @contextmanager
    def connect(self, use_schema: bool = True) -> Iterator:
        """A ``snowflake.connector`` connection; the current schema is ours unless told not to."""
        if self.resource is None and not self.connection_name:
            raise ValueError(
                "no Snowflake connection configured: set SNOWFLAKE_ACCOUNT/SNOWFLAKE_USER/... or "
                "SNOWFLAKE_CONNECTION_NAME"
            )
        if self.resource is not None:
            with self.resource.get_connection() as conn:
                try:
                    self._use(conn, use_schema)
                    yield conn
                except BaseException:
                    # dagster_snowflake closes it only when the block ends without an error; a
                    # connection left open makes Snowpark's close at exit retry against the
                    # account for the whole network timeout (it held pytest 5 min at exit).
                    conn.close()
                    raise
            return
        import snowflake.connector

        conn = snowflake.connector.connect(**self._named_args())
        try:
            self._use(conn, use_schema)
            yield conn
            conn.commit()
        finally:
            conn.close()

    def _use(self, conn, use_schema: bool) -> None:
        if use_schema:
            conn.cursor().execute(identifiers.render("USE SCHEMA {schema}", schema=self.schema_fqn))

    @contextmanager
    def snowpark_session(self) -> Iterator:
        """A Snowpark session over one of our connector connections (ML Jobs need one).

        The connection closes (and logs out) when the block ends; Snowpark's own close of the
        session at interpreter exit then finds it closed. Were the logout to fail, that close is
        retried for the connector's network timeout, which the profile always sets
        (``SNOWFLAKE_NETWORK_TIMEOUT``, default in ``profiles.py``), never without end.
        """
        from snowflake.snowpark import Session

        with self.connect(use_schema=False) as conn:  # the resource's database and schema
            yield Session.builder.configs({"connection": conn}).create()

    def describe(self) -> str:
        return f"{self.database}.{self.schema_name}"
