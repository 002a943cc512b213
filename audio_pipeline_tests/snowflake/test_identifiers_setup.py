"""Identifier validation (hostile names rejected before any SQL), bound values, setup plan."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from audio_pipeline.resources.compute import SnowflakeMLJobCompute
from audio_pipeline.resources.snowflake_connection import SnowflakeConnection
from audio_pipeline.resources.stage import SnowflakeStage
from audio_pipeline.resources.warehouse import SnowflakeStore
from audio_pipeline.snowflake_setup import EGRESS_HOSTS, run_plan, setup_plan
from audio_pipeline.transcription import identifiers, snowflake_sql

from ..helpers import RecordingConnection, RecordingCursor

HOSTILE = 'x"; DROP TABLE t; --'


@pytest.mark.parametrize(
    "name",
    [HOSTILE, "a b", "db.schema", "1abc", "", "x'y", "a;b", "é", "x" * 256, None, 3],
)
def test_hostile_or_invalid_identifiers_are_rejected(name):
    with pytest.raises(identifiers.InvalidIdentifierError, match="invalid Snowflake"):
        identifiers.quote(name)


def test_valid_identifiers_are_quoted_upper_case():
    assert identifiers.quote("audio_files_stage") == '"AUDIO_FILES_STAGE"'
    assert identifiers.qualified("db", "Sch$1", "_t") == '"DB"."SCH$1"."_T"'
    sql = identifiers.render("SELECT * FROM {t} WHERE a = %(a)s", t=("d", "s", "t"))
    assert sql == 'SELECT * FROM "D"."S"."T" WHERE a = %(a)s'
    with pytest.raises(KeyError, match="needs names"):
        identifiers.render("SELECT * FROM {t}")
    with pytest.raises(identifiers.InvalidIdentifierError):
        identifiers.render("SELECT * FROM {t}", t=("d", HOSTILE))


def test_hostile_names_in_config_fail_before_any_sql(sf_connection):
    bad_db = sf_connection.model_copy(update={"database": HOSTILE})
    with pytest.raises(identifiers.InvalidIdentifierError, match="database name"):
        SnowflakeStore(connection=bad_db).ensure_tables()
    with pytest.raises(identifiers.InvalidIdentifierError, match="identifier"):
        list(SnowflakeStage(connection=sf_connection, stage_name=HOSTILE).list_files())
    with pytest.raises(identifiers.InvalidIdentifierError, match="schema name"):
        SnowflakeStore(
            connection=sf_connection.model_copy(update={"schema_name": HOSTILE})
        ).payload_spec()
    with pytest.raises(identifiers.InvalidIdentifierError, match="integration name"):
        SnowflakeMLJobCompute(
            connection=sf_connection, external_access_integrations=[HOSTILE]
        ).submit_args("m", "run")


def test_hostile_values_are_bound_and_stored_verbatim(sf_connection):
    store = SnowflakeStore(connection=sf_connection)
    store.ensure_tables()
    path = "a'; DROP TABLE AUDIO_FILES; --/x.flac"
    store.register_files(
        [
            {
                "file_path": path,
                "size_bytes": 1,
                "content_md5": None,
                "last_modified": None,
                "batch_key": "b'); --",
                "source": "%(x)s {y}",
            }
        ]
    )
    assert store.query("SELECT file_path, batch_key, source FROM audio_files") == [
        (path, "b'); --", "%(x)s {y}")
    ]
    assert [p.file_path for p in store.pending_files(["b'); --"], "m")] == [path]


def test_setup_plan_roles_objects_and_narrow_egress():
    connection = SnowflakeConnection(connection_name="unused")
    compute = SnowflakeMLJobCompute(connection=connection)
    steps = setup_plan(connection, compute, job_role="ML_ROLE")
    text = "\n".join(s for step in steps for s in step.statements)
    assert [s.name for s in steps if s.role == "ACCOUNTADMIN"] == [
        "create_compute_pool",
        "create_compute_pool",
        "create_network_rule",
        "create_external_access_integration",
        "grant_integration_usage",
        "grant_compute_pool_usage",
        "grant_compute_pool_usage",
        "grant_future_tables",  # MANAGE GRANTS: SYSADMIN lacks it by default
    ]
    assert steps[0].role == "SYSADMIN" and steps[-2].name == "grant_schema_usage"
    names = [s.name for s in steps]
    migrate = steps[names.index("migrate_tables")]
    assert names.index("migrate_tables") == names.index("create_tables") + 1
    assert migrate.role == "SYSADMIN"  # the tables' owner: ALTER TABLE needs ownership
    assert "DIRECTORY = (ENABLE = TRUE)" in text and "ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')" in text
    assert "IF NOT EXISTS" in text and "0.0.0.0" not in text
    assert "INSTANCE_FAMILY = CPU_X64_M" in text and "INSTANCE_FAMILY = GPU_NV_S" in text
    pools = [s.params for s in steps if s.name == "create_compute_pool"]
    assert pools[0]["max_nodes"] == 1 and pools[1]["max_nodes"] == 5
    rule = next(s for s in steps if s.name == "create_network_rule")
    assert rule.params["hosts"] == tuple(f"{h}:443" for h in EGRESS_HOSTS)
    assert {"www.openslr.org:443", "huggingface.co:443", "pypi.org:443"} <= set(
        rule.params["hosts"]
    )
    for stmt in rule.statements:
        assert "%(hosts)s" in stmt  # bound, not formatted
    with pytest.raises(identifiers.InvalidIdentifierError, match="host"):
        setup_plan(connection, compute, hosts=("0.0.0.0",))
    with pytest.raises(identifiers.InvalidIdentifierError):
        setup_plan(connection, compute, job_role=HOSTILE)


def test_run_plan_switches_roles_and_binds_params():
    connection = SnowflakeConnection(connection_name="unused")
    steps = setup_plan(connection, SnowflakeMLJobCompute(connection=connection))
    cursor = RecordingCursor()
    n = run_plan(cursor, steps, echo=lambda _: None)
    sqls = [c[0] for c in cursor.calls]
    assert n == len(sqls) - sum(s.startswith("USE ROLE") for s in sqls)
    assert [s for s in sqls if s.startswith("USE ROLE")] == [
        'USE ROLE "SYSADMIN"',
        'USE ROLE "ACCOUNTADMIN"',
    ]
    assert any(s.startswith("ALTER TABLE") for s in sqls)  # migrations: in setup only
    bound = [p for s, p in cursor.calls if "%(" in s]
    assert bound and all(isinstance(p, dict) for p in bound)
    assert all(p is None for s, p in cursor.calls if "%(" not in s)


def test_setup_data_objects_run_on_fakesnow(sf_connection):
    """The SYSADMIN part of the plan (database … tables) really runs, twice (idempotent)."""
    compute = SnowflakeMLJobCompute(connection=sf_connection)
    steps = [
        s
        for s in setup_plan(sf_connection, compute)
        if s.name.startswith("create_")
        and s.name not in ("create_warehouse", "create_compute_pool", "create_network_rule")
        and s.name != "create_stage_stream"  # streams: the emulated account (test_sensor_costs)
        and "integration" not in s.name
    ]
    with sf_connection.connect(use_schema=False) as conn:
        cur = conn.cursor()
        for _ in range(2):
            for step in steps:
                for stmt in step.statements:
                    cur.execute(stmt)
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
            ("AUDIO_TRANSCRIPTION_SCH",),
        )
        assert [r[0] for r in cur.fetchall()] == [
            "AUDIO_FILES",
            "REFERENCE_TRANSCRIPTS",
            "TRANSCRIPTS",
        ]
    assert snowflake_sql.json_list(["a", 1]) == '["a", "1"]'


def test_runtime_table_statements_need_no_ownership():
    """A job, a sensor tick and an asset run call ``ensure_tables``: CREATE ... IF NOT EXISTS
    only (CREATE TABLE on the schema, which setup grants); ALTER TABLE (ownership) is setup's."""
    from audio_pipeline.transcription.sinks import SnowflakeSink

    cursor = RecordingCursor()

    @contextmanager
    def connect():
        yield RecordingConnection(cursor)

    SnowflakeSink("DB", "SCH", connect=connect).ensure_tables()
    sqls = [c[0] for c in cursor.calls]
    assert len(sqls) == 3 and all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in sqls)
    assert not any("ALTER" in s.upper() for s in sqls)


def test_a_job_role_without_ownership_runs_a_tick_and_an_asset_path(emulated_account, tmp_path):
    """Setup as SYSADMIN/ACCOUNTADMIN with ``--job-role PIPELINE``; then, as PIPELINE (which owns
    no table), what a sensor tick and an asset run do to the tables works, and sends no ALTER
    TABLE, which the emulated account refuses to a non-owner as Snowflake does."""
    import snowflake.connector.errors as sf_errors

    from audio_pipeline.sensors import NewFilesSettings, ScanCursor, discover_new_files

    from ..helpers import SAMPLE_TREE, _counter, fake_resource

    connection = SnowflakeConnection(
        resource=fake_resource(emulated_account.connection_kwargs()),
        database=f"ROLES_{next(_counter)}",
        schema_name="AUDIO_TRANSCRIPTION_SCH",
        warehouse="ML_MODEL_WH",
    )
    compute = SnowflakeMLJobCompute(connection=connection)
    with connection.connect(use_schema=False) as conn:
        run_plan(conn.cursor(), setup_plan(connection, compute, job_role="PIPELINE"), print)
    emulated_account.default_role = "PIPELINE"  # every new session runs as the job role
    try:
        start = len(emulated_account.all_statements)
        stage, store = SnowflakeStage(connection=connection), SnowflakeStore(connection=connection)
        flac = sorted(SAMPLE_TREE.glob("*/*/*.flac"))[0]
        assert stage.put_file(flac, f"drop/{flac.name}")
        stage.close()
        store.ensure_tables()  # what the asset, the tick and the job run first
        found = discover_new_files(stage, store, ScanCursor(), NewFilesSettings(min_age_s=0))
        sent = emulated_account.all_statements[start:]
        with pytest.raises(sf_errors.ProgrammingError, match="Insufficient privileges"):
            with connection.connect() as conn:
                snowflake_sql.execute(conn.cursor(), "migrate_tables", **store._sink().names())
    finally:
        emulated_account.default_role = "SYSADMIN"
    assert [p for paths in found.batches.values() for p in paths] == [f"drop/{flac.name}"]
    assert store.known_files([f"drop/{flac.name}"])
    assert {role for role, _ in sent} == {"PIPELINE"}
    assert not [sql for _, sql in sent if sql.upper().startswith("ALTER TABLE")]
