"""``python -m audio_pipeline.snowflake_setup``: create or update the Snowflake objects.

Each step runs under the role it needs: the data objects (database, schema, warehouse, stages,
tables), their schema migrations (``ALTER TABLE ... ADD COLUMN``: ownership) and the grants on
them under ``--role`` (default SYSADMIN, their owner); compute pools, the egress network rule, the
external access integration, their grants and the future-tables grant (MANAGE GRANTS) under
``--admin-role`` (default ACCOUNTADMIN). Egress is limited
to the hosts the jobs need (LibriSpeech mirrors, Hugging Face, PyPI), never 0.0.0.0.
``--dry-run`` prints the statements and their bound parameters without connecting.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from .transcription import identifiers, snowflake_sql

EGRESS_HOSTS = (
    # LibriSpeech (openslr resource 12) and its mirrors
    "www.openslr.org",
    "openslr.org",
    "us.openslr.org",
    "openslr.elda.org",
    "openslr.magicdatatech.com",
    # Hugging Face: the hub, and the hosts its downloads redirect to, from the hub's
    # https://huggingface.co/.well-known/meta.json (hubDomains, lfsDomains) plus the Xet/CAS
    # storage hosts that Xet-backed repositories (large weights) download from.
    "huggingface.co",
    "hf.co",
    "cdn-lfs.hf.co",
    "cdn-lfs-us-1.hf.co",
    "cdn-lfs-eu-1.hf.co",
    "cdn-lfs.huggingface.co",
    "cdn-lfs-us-1.huggingface.co",
    "transfer.xethub.hf.co",
    "transfer.xethub-eu.hf.co",
    "cas-bridge.xethub.hf.co",
    "cas-server.xethub.hf.co",
    # pip_requirements of the jobs
    "pypi.org",
    "files.pythonhosted.org",
)
NETWORK_RULE = "AUDIO_PIPELINE_EGRESS_RULE"
# The new-file sensor's stream on the stage's directory table and its pending table
# (resources/stage.py: SnowflakeStage.stream_name, pending_table).
SENSOR_STREAM = "AUDIO_FILES_STAGE_STREAM"
SENSOR_PENDING_TABLE = "STAGE_PENDING_FILES"


@dataclass
class Step:
    role: str
    name: str  # sql/snowflake/<name>.sql
    statements: list[str]
    params: dict | None = None


def _step(run_as: str, sql_name: str, params: dict | None = None, /, **names) -> Step:
    return Step(run_as, sql_name, snowflake_sql.statements(sql_name, **names), params)


def setup_plan(
    connection,
    compute,
    role: str = "SYSADMIN",
    admin_role: str = "ACCOUNTADMIN",
    job_role: str | None = None,
    hosts: tuple[str, ...] = EGRESS_HOSTS,
    stage_name: str = "AUDIO_FILES_STAGE",
) -> list[Step]:
    """The ordered steps; every name validated (a hostile name fails here, before any SQL)."""
    job_role = job_role or role
    database, schema = connection.schema_fqn
    fqn = connection.object_name
    host_ports = tuple(f"{identifiers.validate_host(h)}:443" for h in hosts)
    (integration,) = compute.external_access_integrations or ["AUDIO_PIPELINE_ACCESS_INTEGRATION"]
    gpu = compute.pool_sql()
    cpu = compute.model_copy(
        update={
            "pool_name": compute.ingest_pool_name,
            "instance_family": compute.ingest_instance_family,
            "min_nodes": 1,
            "max_nodes": 1,
        }
    ).pool_sql()
    tables = {t.lower(): fqn(t) for t in ("AUDIO_FILES", "REFERENCE_TRANSCRIPTS", "TRANSCRIPTS")}
    steps = [
        _step(role, "create_database", database=database),
        _step(role, "create_schema", schema=(database, schema)),
        _step(role, "create_warehouse", warehouse=connection.warehouse),
        _step(role, "create_stage", stage=fqn(stage_name)),
        _step(
            role,
            "create_stage_stream",
            stream=fqn(SENSOR_STREAM),
            stage=fqn(stage_name),
            pending=fqn(SENSOR_PENDING_TABLE),
        ),
        _step(role, "create_job_stage", stage=fqn(compute.job_stage)),
        _step(role, "create_tables", **tables),
        # ALTER TABLE needs ownership: migrations run here, as the tables' owner, never in a job,
        # a sensor tick or an asset run
        _step(role, "migrate_tables", **tables),
    ]
    for pool_sql in (cpu, gpu):
        stmt, params = pool_sql["create"]
        steps.append(Step(admin_role, "create_compute_pool", [stmt], params))
    rule = fqn(NETWORK_RULE)
    steps += [
        _step(admin_role, "create_network_rule", {"hosts": host_ports}, rule=rule),
        _step(admin_role, "create_external_access_integration", integration=integration, rule=rule),
        _step(admin_role, "grant_integration_usage", integration=integration, role=job_role),
    ]
    for pool in (compute.ingest_pool_name, compute.pool_name):
        steps.append(_step(admin_role, "grant_compute_pool_usage", pool=pool, role=job_role))
    if identifiers.validate(job_role).upper() != identifiers.validate(role).upper():
        steps.append(
            _step(
                role,
                "grant_schema_usage",
                database=database,
                schema=(database, schema),
                warehouse=connection.warehouse,
                audio_stage=fqn(stage_name),
                job_stage=fqn(compute.job_stage),
                role=job_role,
            )
        )
        # a future grant needs MANAGE GRANTS, which SYSADMIN lacks by default
        steps.append(
            _step(
                admin_role,
                "grant_future_tables",
                schema=(database, schema),
                role=job_role,
            )
        )
    return steps


def run_plan(cursor, steps: list[Step], echo=print) -> int:
    """Execute the steps, switching role when it changes; returns the statements run."""
    current = None
    count = 0
    for step in steps:
        if step.role != current:
            cursor.execute(identifiers.render("USE ROLE {role}", role=step.role))
            current = step.role
        for stmt in step.statements:
            echo(f"[{step.role}] {stmt.splitlines()[0]}")
            snowflake_sql.execute_statement(cursor, stmt, step.params)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    from .profiles import resources_for

    parser = argparse.ArgumentParser(prog="python -m audio_pipeline.snowflake_setup")
    parser.add_argument("--role", default="SYSADMIN", help="role for data objects")
    parser.add_argument("--admin-role", default="ACCOUNTADMIN", help="role for pools/EAI/grants")
    parser.add_argument("--job-role", default=None, help="role that runs jobs (default: --role)")
    parser.add_argument("--extra-host", action="append", default=[], help="another egress host")
    parser.add_argument("--dry-run", action="store_true", help="print, do not connect")
    args = parser.parse_args(argv)
    resources = resources_for("snowflake")
    with resources["compute"].connection.process_config_and_initialize_cm() as connection:
        compute = resources["compute"].model_copy(update={"connection": connection})
        return _setup(connection, compute, args)


def _setup(connection, compute, args) -> int:
    hosts = EGRESS_HOSTS + tuple(args.extra_host)
    try:
        steps = setup_plan(connection, compute, args.role, args.admin_role, args.job_role, hosts)
    except identifiers.InvalidIdentifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for step in steps:
            for stmt in step.statements:
                params = f"  -- params: {step.params}" if step.params else ""
                print(f"-- role {step.role}\n{stmt};{params}")
        return 0
    with connection.connect(use_schema=False) as conn:
        n = run_plan(conn.cursor(), steps)
    print(f"{n} statements run: Snowflake objects are in place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
