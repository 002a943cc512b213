"""One Snowflake connection setting shared by the stage, the store and the compute.

Either a ``dagster_snowflake.SnowflakeResource`` (built from ``SNOWFLAKE_*`` env vars through
``dg.EnvVar``) or a named connection of ``~/.snowflake/connections.toml``. A Snowpark session for
ML Jobs is built from the same settings. Secrets stay in the resource: they are never logged,
put in metadata or in exception text (connector errors are re-raised without connection args).
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from dagster_snowflake import SnowflakeResource
from pydantic import Field

from ..transcription import identifiers

DEFAULT_DATABASE = "MULTINODE_MULTIGPU_MYDB"
DEFAULT_SCHEMA = "AUDIO_TRANSCRIPTION_SCH"
DEFAULT_WAREHOUSE = "ML_MODEL_WH"


class SnowflakeConnection(dg.ConfigurableResource):
    """Where and as whom to connect; ``database``/``schema_name`` qualify every object we touch."""

    resource: SnowflakeResource | None = Field(
        default=None, description="credentials from env vars (dg.EnvVar)"
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
                self._use(conn, use_schema)
                yield conn
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
        """A Snowpark session from the same settings (ML Jobs need one)."""
        from snowflake.snowpark import Session

        if self.resource is not None:
            # what SnowflakeResource.create_snowpark_session does, minus its failing-close error
            args = dict(self.resource._connection_args)  # noqa: SLF001
        else:
            args = self._named_args()
        session = Session.builder.configs(args).create()
        try:
            yield session
        finally:
            try:
                session.close()
            except Exception as exc:  # closing must not mask the job's outcome
                dg.get_dagster_logger().warning(
                    f"closing the Snowpark session failed: {type(exc).__name__}"
                )
                try:
                    session.connection.close()
                except Exception:
                    pass
            # Snowpark closes every session again at interpreter exit and retries without end
            # when the account cannot be reached then: never let that hold a process open.
            atexit.unregister(session._close_at_exit)  # noqa: SLF001

    def describe(self) -> str:
        return f"{self.database}.{self.schema_name}"
