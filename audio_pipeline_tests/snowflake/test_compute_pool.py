"""Compute-pool SQL of SnowflakeMLJobCompute.

fakesnow 0.12 cannot run CREATE/ALTER/DESCRIBE COMPUTE POOL (parser error / HTTP 500), so these
tests check the generated SQL text and its bound parameters with a recording cursor that answers
DESCRIBE with scripted rows; the connector's own pyformat binding is checked on a real connection.
"""

from __future__ import annotations

import pytest

from audio_pipeline.resources.compute import SnowflakeMLJobCompute
from audio_pipeline.resources.snowflake_connection import SnowflakeConnection
from audio_pipeline.transcription.identifiers import InvalidIdentifierError

from ..helpers import RecordingCursor

COLUMNS = [
    "name", "state", "min_nodes", "max_nodes", "instance_family", "num_services", "num_jobs",
    "auto_suspend_secs", "auto_resume", "active_nodes", "idle_nodes", "target_nodes",
]  # fmt: skip


def describe_row(min_nodes=1, max_nodes=5, family="GPU_NV_S", suspend=300, resume="true"):
    return (
        "AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES", "SUSPENDED", min_nodes, max_nodes, family, 0, 0,
        suspend, resume, 0, 0, 0,
    )  # fmt: skip


def compute(**kw) -> SnowflakeMLJobCompute:
    return SnowflakeMLJobCompute(connection=SnowflakeConnection(connection_name="unused"), **kw)


def test_create_pool_sql_and_params():
    stmts = compute().pool_sql()
    create, params = stmts["create"]
    assert create == (
        'CREATE COMPUTE POOL IF NOT EXISTS "AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES"\n'
        "    MIN_NODES = %(min_nodes)s\n"
        "    MAX_NODES = %(max_nodes)s\n"
        "    INSTANCE_FAMILY = GPU_NV_S\n"
        "    AUTO_RESUME = %(auto_resume)s\n"
        "    AUTO_SUSPEND_SECS = %(auto_suspend_secs)s\n"
        "    INITIALLY_SUSPENDED = %(initially_suspended)s"
    )
    assert params == {
        "min_nodes": 1,
        "max_nodes": 5,
        "auto_resume": True,
        "auto_suspend_secs": 300,
        "initially_suspended": True,
    }
    assert stmts["describe"] == (
        'DESCRIBE COMPUTE POOL "AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES"',
        None,
    )
    assert stmts["alter"][0].startswith(
        'ALTER COMPUTE POOL "AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES" SET'
    )
    assert "initially_suspended" not in stmts["alter"][1]


def test_pool_matching_config_is_not_altered():
    cursor = RecordingCursor({"DESCRIBE": (COLUMNS, [describe_row()])})
    meta = compute().ensure_pool_with(cursor)
    assert [c[0].split()[0] for c in cursor.calls] == ["DESCRIBE"]
    assert meta["state"] == "SUSPENDED"
    assert meta["instance_family"] == "GPU_NV_S"
    assert (meta["min_nodes"], meta["max_nodes"]) == (1, 5)
    assert meta["altered"] == "nothing"
    assert meta["credits_per_hour_at_max_nodes"] == pytest.approx(2.85)


def test_pool_differing_from_config_is_altered():
    before = (COLUMNS, [describe_row(max_nodes=2, suspend=600)])
    after = (COLUMNS, [describe_row(max_nodes=5)])
    cursor = RecordingCursor({"DESCRIBE": [before, after]})
    meta = compute().ensure_pool_with(cursor, log=None)
    verbs = [c[0].split()[0] for c in cursor.calls]
    assert verbs == ["DESCRIBE", "ALTER", "DESCRIBE"]
    alter_sql, alter_params = cursor.calls[1]
    assert alter_params == {
        "min_nodes": 1,
        "max_nodes": 5,
        "auto_resume": True,
        "auto_suspend_secs": 300,
    }
    assert "MAX_NODES = %(max_nodes)s" in alter_sql
    assert meta["altered"] == "auto_suspend_secs, max_nodes"
    assert meta["max_nodes"] == 5


def test_instance_family_mismatch_is_reported_not_altered():
    cursor = RecordingCursor({"DESCRIBE": (COLUMNS, [describe_row(family="CPU_X64_M")])})
    meta = compute().ensure_pool_with(cursor)
    assert "configured GPU_NV_S, pool has CPU_X64_M" in meta["instance_family_mismatch"]
    assert "credits_per_hour_at_max_nodes" not in meta


def test_bad_pool_config_is_rejected():
    with pytest.raises(InvalidIdentifierError, match="compute pool name"):
        compute(pool_name='x"; DROP TABLE t; --').pool_sql()
    with pytest.raises(InvalidIdentifierError, match="keyword"):
        compute(instance_family="GPU_NV_S; DROP").pool_sql()
    with pytest.raises(RuntimeError, match="min_nodes 3 > max_nodes 2"):
        compute(min_nodes=3, max_nodes=2).ensure_pool_with(RecordingCursor())


def test_connector_binds_pool_params_as_literals():
    """The params above, bound as the real connector binds pyformat (its public converter):
    ints and booleans as literals."""
    from snowflake.connector.converter import SnowflakeConverter

    create, params = compute().pool_sql()["create"]
    conv = SnowflakeConverter()
    bound = create % {k: conv.quote(conv.escape(conv.to_snowflake(v))) for k, v in params.items()}
    assert "MIN_NODES = 1\n" in bound and "AUTO_RESUME = TRUE\n" in bound
    assert bound.endswith("INITIALLY_SUSPENDED = TRUE")


def test_job_role_with_usage_and_monitor_uses_the_pool_as_it_is(acct_connection, emulated_account):
    """Setup (ACCOUNTADMIN) created the pool and granted SYSADMIN only USAGE and MONITOR. The
    asset must neither CREATE (no CREATE COMPUTE POOL on the account) nor fail on the ALTER it
    may not run; before, CREATE ... IF NOT EXISTS failed every materialization."""
    account = emulated_account
    account.create_pool_roles = {"ACCOUNTADMIN"}
    try:
        differing = SnowflakeMLJobCompute(connection=acct_connection, max_nodes=4)
        start = len(account.statements)
        meta = differing.ensure_pool()
        ran = [(role, sql.split()[0].upper()) for role, sql in account.statements[start:]]
    finally:
        account.create_pool_roles = None
    assert ran == [("SYSADMIN", "DESCRIBE")]  # the ALTER was refused: not recorded as run
    assert meta["created"] is False
    assert meta["altered"].startswith("not permitted") and "max_nodes" in meta["altered"]
    assert meta["max_nodes"] == 5  # as setup made it
