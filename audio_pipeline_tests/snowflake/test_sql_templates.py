"""Every ``sql/snowflake`` template, rendered with its names and parameters, is valid Snowflake SQL.

Statements are rendered as the connector sends them: ``pyformat`` values interpolated client-side
by the connector's own converter (what a user's connection sends), and ``qmark`` with ``?``
markers (what the job's Snowpark session sends). Each is parsed with sqlglot (dialect snowflake);
the statements sqlglot cannot parse (compute pool, network rule, integration, stage refresh,
grants, warehouse) must match the documented grammar in ``tools/snowflake_emulator/grammar.py``.
"""

from __future__ import annotations

import datetime as dt
import string

import pytest
import sqlglot
from snowflake.connector.converter import SnowflakeConverter
from sqlglot import exp

from audio_pipeline import snowflake_setup
from audio_pipeline.resources.compute import SnowflakeMLJobCompute
from audio_pipeline.resources.snowflake_connection import SnowflakeConnection
from audio_pipeline.transcription import identifiers, snowflake_sql
from audio_pipeline.transcription.sql import SQL_ROOT
from tools.snowflake_emulator import grammar

TEMPLATES = sorted(p.stem for p in (SQL_ROOT / "snowflake").glob("*.sql"))
NOW = dt.datetime(2026, 1, 2, 3, 4, 5)
PARAMS = {
    "hosts": ["huggingface.co:443", "cas-bridge.xethub.hf.co:443"],
    "min_nodes": 1,
    "max_nodes": 5,
    "auto_resume": True,
    "auto_suspend_secs": 300,
    "initially_suspended": True,
    "force": False,
    "retry_errors": True,
    "size_bytes": 1234,
    "duration_s": 1.5,
    "since": NOW,
    "last_modified": NOW,
    "transcribed_at": NOW,
    "batch_keys": '["b1", "b2"]',
    "file_paths": '["a/b.flac"]',
    "prefix": "dev-clean/%",
}
NAMES = {
    "instance_family": identifiers.Keyword("GPU_NV_S"),
    "database": "AUDIO_DB",
    "schema": ("AUDIO_DB", "AUDIO_SCH"),
    "role": "JOB_ROLE",
    "warehouse": "AUDIO_WH",
    "integration": "AUDIO_INTEGRATION",
    "pool": "AUDIO_POOL",
    "incoming": "TRANSCRIPTS_INCOMING",
}


def names_for(template: str) -> dict:
    text = (SQL_ROOT / "snowflake" / f"{template}.sql").read_text()
    fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
    return {f: NAMES.get(f, ("AUDIO_DB", "AUDIO_SCH", f.upper())) for f in fields}


def params_for(stmt: str) -> dict:
    return {k: PARAMS.get(k, "o'brien \\ value") for k in snowflake_sql._PARAM.findall(stmt)}


def pyformat_text(stmt: str, params: dict | None) -> str:
    """What the connector sends for a pyformat statement (its client-side interpolation)."""
    sql, bound = snowflake_sql.bind(stmt, params, "pyformat")
    if bound is None:
        return sql
    conv = SnowflakeConverter()
    return sql % {k: conv.quote(conv.escape(conv.to_snowflake(v))) for k, v in bound.items()}


def qmark_text(stmt: str, params: dict | None) -> str:
    sql, bound = snowflake_sql.bind(stmt, params, "qmark")
    if bound is not None:
        assert sql.count("?") == len(bound)
    return sql


def assert_valid(text: str) -> str:
    """'grammar' or 'sqlglot': how the statement was checked; fails when it is invalid."""
    if grammar.check(text):
        return "grammar"
    parsed = sqlglot.parse_one(text, dialect="snowflake")
    assert not isinstance(parsed, exp.Command), (
        f"sqlglot does not parse this statement and grammar.py has no rule for it:\n{text}"
    )
    return "sqlglot"


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("render", [pyformat_text, qmark_text], ids=["pyformat", "qmark"])
def test_template_renders_to_valid_snowflake_sql(template, render):
    stmts = snowflake_sql.statements(template, **names_for(template))
    assert stmts, template
    for stmt in stmts:
        if render is qmark_text and grammar.kind_of(stmt) and "%(" in stmt:
            # Setup DDL runs on the user's (pyformat) connection only: Snowflake does not bind
            # values server-side in DDL.
            continue
        assert_valid(render(stmt, params_for(stmt)))


def test_setup_plan_is_valid_sql_as_the_connector_sends_it():
    """The real setup plan with its real parameters: what `make snowflake-setup` runs."""
    compute = SnowflakeMLJobCompute(connection=SnowflakeConnection(connection_name="unused"))
    steps = snowflake_setup.setup_plan(compute.connection, compute, job_role="AUDIO_JOB_ROLE")
    kinds = {}
    for step in steps:
        for stmt in step.statements:
            text = pyformat_text(stmt, step.params)
            kinds[text.split()[0:3].__str__()] = assert_valid(text)
    rule = next(s for s in steps if s.name == "create_network_rule")
    text = pyformat_text(rule.statements[0], rule.params)
    assert "VALUE_LIST = ('www.openslr.org:443'," in text
    assert "grammar" in kinds.values() and "sqlglot" in kinds.values()


def test_grammar_rejects_what_snowflake_rejects():
    bad = [
        "CREATE NETWORK RULE R MODE = EGRESS TYPE = HOST_PORT VALUE_LIST = 'a.com:443','b.com:443'",
        "ALTER NETWORK RULE R SET VALUE_LIST = 'a.com:443'",
        "CREATE COMPUTE POOL P MIN_NODES = x",
        "ALTER COMPUTE POOL P SET INSTANCE_FAMILY = GPU_NV_M",
        "CREATE EXTERNAL ACCESS INTEGRATION I ALLOWED_NETWORK_RULES = R ENABLED = TRUE",
    ]
    for stmt in bad:
        with pytest.raises(grammar.GrammarError):
            grammar.check(stmt)
    assert grammar.check(
        "CREATE NETWORK RULE R MODE = EGRESS TYPE = HOST_PORT VALUE_LIST = ('a.com:443')"
    )
    assert not grammar.check("SELECT 1")
