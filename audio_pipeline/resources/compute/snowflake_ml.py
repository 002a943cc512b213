"""Snowflake compute pools; the payload runs there as an ML Job, followed through Pipes."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from pydantic import Field

from ...transcription import identifiers, snowflake_sql
from ..snowflake_connection import SnowflakeConnection
from .base import INGEST_PAYLOAD_MODULE, PAYLOAD_MODULE, ComputePoolError, TranscriptionCompute
from .bundle import DEADLINE_ENV, PAYLOAD_ENTRY, build_payload_dir

# Job service names: <prefix><the Dagster run id's first 12 hex digits>_<suffix Snowflake adds>
JOB_PREFIXES = {"transcripts": "TRANSCRIPTS_", "ingest": "INGEST_", "preflight": "PREFLIGHT_"}
TERMINAL_STATES = frozenset({"DONE", "FAILED", "INTERNAL_ERROR", "CANCELLED", "DELETED"})

# Relative to the job's payload directory, where the SDK writes requirements.txt and pip runs.
PAYLOAD_CONSTRAINTS = "audio_pipeline/transcription/constraints.txt"
# openai/whisper-large-v3's commit on the Hugging Face Hub that this project pins by default.
WHISPER_LARGE_V3_REVISION = "06f233fe06e710322aca913c1bc4249a0d71fce1"
# Credits per node-hour (Snowflake service consumption table); used for the cost estimate.
CREDITS_PER_NODE_HOUR = {"GPU_NV_S": 0.57}


def payload_requirements() -> list[str]:
    """The payload's bounded requirements (``transcription/requirements.txt``) and, for pip on
    each node, the constraints shipped with the payload (its path inside the job's directory)."""
    path = Path(__file__).resolve().parents[2] / "transcription" / "requirements.txt"
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line] + [f"-c {PAYLOAD_CONSTRAINTS}"]


class SnowflakeMLJobCompute(TranscriptionCompute):
    """A Snowflake compute pool; the payload runs there as an ML Job, followed through Pipes.

    ``home`` is the working directory inside the job's container (model cache).
    """

    connection: SnowflakeConnection
    home: str = "/tmp/audio_pipeline"
    # a Hub model is pinned to a commit: copied once into the models stage, reused by every job
    default_model: str = f"openai/whisper-large-v3@{WHISPER_LARGE_V3_REVISION}"
    pool_name: str = "AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES"
    instance_family: str = "GPU_NV_S"
    min_nodes: int = Field(default=1, ge=1)
    max_nodes: int = Field(default=5, ge=1)
    auto_suspend_secs: int = Field(default=300, ge=0)
    auto_resume: bool = True
    initially_suspended: bool = True
    target_instances: int = Field(default=5, ge=1, description="nodes per transcription job")
    min_instances: int | None = Field(
        default=None,
        ge=1,
        description="nodes a job waits for before it starts (default: target_instances). Fewer "
        "start sooner, but nodes that join later are billed while the job may already be "
        "ending, and the payload plans its actors on the nodes present at its start",
    )
    job_stage: str = "JOB_STAGE"
    models_path: str = Field(
        default="models",
        description="where Hub models are copied once, under the job stage (@JOB_STAGE/models)",
    )
    external_access_integrations: list[str] = Field(
        default_factory=lambda: ["AUDIO_PIPELINE_ACCESS_INTEGRATION"]
    )
    pip_requirements: list[str] = Field(
        default_factory=lambda: payload_requirements(),
        description="pip requirements of the job (default: transcription/requirements.txt)",
    )
    runtime_environment: str | None = None
    poll_interval_s: float = 10.0
    drain_timeout_s: float = Field(
        default=180.0,
        description="after the job ends, how long to wait for its last Pipes message (a quarter "
        "of it after a failure, whose head may have died before sending it)",
    )
    timeout_s: float | None = Field(default=3 * 3600.0, description="cancel the job after this")
    deadline_grace_s: float = Field(
        default=600.0,
        ge=0,
        description="the job also ends itself this long after timeout_s, with or without the "
        "Dagster process that follows it",
    )
    keep_failed_days: float = Field(
        default=7.0,
        ge=0,
        description="a failed job's service, payload copy and Pipes chunks are kept this long "
        "(for its logs); a successful job's are removed when it ends",
    )
    ingest_pool_name: str = "AUDIO_PROCESSING_CP_DATA_DOWNLOAD"
    ingest_instance_family: str = "CPU_X64_M"

    def pool_sql(self) -> dict:
        """(statement, params) of the CREATE, ALTER and DESCRIBE statements for this pool."""
        pool = identifiers.validate(self.pool_name, "compute pool name")
        params = {
            "min_nodes": int(self.min_nodes),
            "max_nodes": int(self.max_nodes),
            "auto_resume": bool(self.auto_resume),
            "auto_suspend_secs": int(self.auto_suspend_secs),
            "initially_suspended": bool(self.initially_suspended),
        }
        family = identifiers.Keyword(self.instance_family)
        (create,) = snowflake_sql.statements(
            "create_compute_pool", pool=pool, instance_family=family
        )
        (alter,) = snowflake_sql.statements("alter_compute_pool", pool=pool)
        (describe,) = snowflake_sql.statements("describe_compute_pool", pool=pool)
        alter_params = {k: v for k, v in params.items() if k != "initially_suspended"}
        return {
            "create": (create, params),
            "alter": (alter, alter_params),
            "describe": (describe, None),
        }

    def ensure_pool(self, log=None) -> dict:
        with self.connection.connect(use_schema=False) as conn:
            return self.ensure_pool_with(conn.cursor(), log)

    def ensure_pool_with(self, cursor, log=None) -> dict:
        """DESCRIBE; CREATE only when the pool is missing, ALTER only where it differs from the
        config. The role that runs jobs usually holds only USAGE and MONITOR on the pool (what
        setup grants): a pool that exists is used as it is, and an ALTER it may not run is
        reported, not raised."""
        if self.min_nodes > self.max_nodes:
            raise ComputePoolError(f"min_nodes {self.min_nodes} > max_nodes {self.max_nodes}")
        stmts = self.pool_sql()
        info = _describe_or_none(cursor, stmts["describe"][0])
        created = info is None
        if created:
            if log:
                log.info(f"compute pool {self.pool_name} does not exist: creating it")
            snowflake_sql.execute_statement(cursor, *stmts["create"])
            info = _describe_or_none(cursor, stmts["describe"][0]) or {}
        wanted = stmts["alter"][1]
        differs = sorted(k for k, v in wanted.items() if not _same(info.get(k), v))
        altered = ", ".join(differs) or "nothing"
        if differs:
            if log:
                log.info(f"compute pool {self.pool_name}: updating {', '.join(differs)}")
            try:
                snowflake_sql.execute_statement(cursor, *stmts["alter"])
                info = _describe_or_none(cursor, stmts["describe"][0]) or info
            except Exception as exc:
                if not _is_access_error(exc):
                    raise
                altered = f"not permitted ({', '.join(differs)} differ from the config)"
                if log:
                    log.warning(
                        f"compute pool {self.pool_name}: {', '.join(differs)} differ from the "
                        "config, but this role may not ALTER the pool (setup grants USAGE and "
                        "MONITOR); using it as it is. Re-run `make snowflake-setup` to change it."
                    )
        family = str(info.get("instance_family") or "")
        meta = {
            "address": f"compute pool {self.pool_name}",
            "pool": self.pool_name,
            "state": info.get("state"),
            "instance_family": family,
            "min_nodes": _int(info.get("min_nodes")),
            "max_nodes": _int(info.get("max_nodes")),
            "active_nodes": _int(info.get("active_nodes")),
            "target_nodes": _int(info.get("target_nodes")),
            "altered": altered,
            "created": created,
        }
        if family and family.upper() != self.instance_family.upper():
            meta["instance_family_mismatch"] = (
                f"configured {self.instance_family}, pool has {family} (cannot be altered: "
                "drop the pool or choose another name)"
            )
            if log:
                log.warning(meta["instance_family_mismatch"])
        rate = CREDITS_PER_NODE_HOUR.get(family.upper() or self.instance_family.upper())
        if rate is not None:
            meta["credits_per_hour_at_max_nodes"] = round(rate * self.max_nodes, 3)
        return meta

    def job_env(self) -> dict[str, str]:
        return {
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }

    def submit_args(self, module: str, run_id: str, ingest: bool = False) -> dict:
        """The ``PipesSnowflakeMLJobClient.run`` arguments other than context, session, extras."""
        database, schema = self.connection.schema_fqn
        pool = self.ingest_pool_name if ingest else self.pool_name
        kwargs = {
            "compute_pool": identifiers.validate(pool, "compute pool name"),
            "entrypoint": PAYLOAD_ENTRY,
            "args": [module],
            # qualified: the SDK PUTs the payload to @<stage_name>/..., whatever the session's
            # current database is
            "stage_name": ".".join(
                (database, schema, identifiers.validate(self.job_stage, "stage name"))
            ),
            "target_instances": 1 if ingest else self.target_instances,
            "min_instances": 1 if ingest else self.effective_min_instances,
            "pip_requirements": list(self.pip_requirements),
            "external_access_integrations": [
                identifiers.validate(e, "integration name")
                for e in self.external_access_integrations
            ],
            "env_vars": self.job_env(),
            "query_warehouse": identifiers.validate(self.connection.warehouse, "warehouse name"),
            "name": job_name(run_id, "ingest" if ingest else "transcripts"),
            "database": database,
            "schema": schema,
        }
        if self.runtime_environment:
            kwargs["runtime_environment"] = self.runtime_environment
        return kwargs

    @property
    def effective_min_instances(self) -> int:
        return min(self.min_instances or self.target_instances, self.target_instances)

    def check_pool_fits(self, cursor, ingest: bool = False) -> dict:
        """DESCRIBE the job's pool; refuse, before anything is submitted, a job that asks for
        more nodes than the pool's MAX_NODES (it would wait for nodes that never come)."""
        pool = self.ingest_pool_name if ingest else self.pool_name
        target = 1 if ingest else self.target_instances
        (describe,) = snowflake_sql.statements(
            "describe_compute_pool", pool=identifiers.validate(pool, "compute pool name")
        )
        info = _describe_or_none(cursor, describe)
        if info is None:
            raise ComputePoolError(
                f"compute pool {pool} does not exist or this role lacks USAGE/MONITOR on it: "
                "run `make snowflake-setup` (and `make snowflake-check`)"
            )
        max_nodes = _int(info.get("max_nodes"))
        if max_nodes is not None and target > max_nodes:
            raise ComputePoolError(
                f"the job asks for target_instances={target} nodes but compute pool {pool} has "
                f"MAX_NODES={max_nodes}: lower the compute resource's target_instances to "
                f"{max_nodes}, or raise the pool's max_nodes (max_nodes: {target} in the compute "
                "resource, then materialize transcription_compute_pool or re-run "
                "`make snowflake-setup`)"
            )
        return info

    def _client(self):
        from ..pipes_snowflake import PipesSnowflakeMLJobClient

        return PipesSnowflakeMLJobClient(
            poll_interval_s=self.poll_interval_s,
            timeout_s=self.timeout_s,
            message_interval_s=min(5.0, self.poll_interval_s),
            drain_timeout_s=self.drain_timeout_s,
        )

    def _run(self, context, extras: dict, module: str, ingest: bool):
        import tempfile

        kwargs = self.submit_args(module, context.run.run_id, ingest=ingest)
        if self.timeout_s is not None:
            # the job ends itself after this (wall clock), even if this process dies
            deadline = time.time() + self.timeout_s + self.deadline_grace_s
            kwargs["env_vars"] = kwargs["env_vars"] | {DEADLINE_ENV: f"{deadline:.0f}"}
        with tempfile.TemporaryDirectory(prefix="audio-payload-") as tmp:
            bundle = build_payload_dir(Path(tmp) / "payload")
            with self.connection.snowpark_session() as session:
                self.check_pool_fits(session.connection.cursor(), ingest=ingest)
                try:
                    return self._client().run(
                        context=context,
                        dir_path=str(bundle),
                        session=session,
                        extras=extras,
                        **kwargs,
                    )
                finally:
                    try:
                        self.remove_expired_jobs(session)
                    except Exception as exc:  # clean-up never fails a run
                        context.log.warning(f"removing expired ML Jobs failed: {exc}")

    # ------------------------------------------------------------ jobs of a run, clean-up
    def job_services(self, cursor, prefix: str) -> list[dict]:
        """``SHOW JOB SERVICES`` of this schema whose name starts with ``prefix``."""
        rows = snowflake_sql.execute(
            cursor,
            "show_job_services",
            {"pattern": prefix + "%"},  # "_" matches itself too; names are filtered below
            schema=self.connection.schema_fqn,
        )
        names = [str(d[0]).lower() for d in cursor.description or []]
        found = [dict(zip(names, row, strict=False)) for row in rows]
        return [r for r in found if str(r.get("name", "")).upper().startswith(prefix.upper())]

    def stop_run_jobs(self, run_id: str) -> list[str]:
        """Cancel the ML Jobs a dead Dagster run left running (the orphaned-job sensor)."""
        from snowflake.ml import jobs

        database, schema = self.connection.schema_fqn
        stopped = []
        with self.connection.snowpark_session() as session:
            cursor = session.connection.cursor()
            for kind in ("transcripts", "ingest"):
                for row in self.job_services(cursor, job_name(run_id, kind)):
                    if str(row.get("status", "")).upper() in TERMINAL_STATES:
                        continue
                    job_id = f"{database}.{schema}.{row['name']}"
                    jobs.get_job(job_id, session=session).cancel()
                    stopped.append(job_id)
        return stopped

    def remove_expired_jobs(self, session, now: dt.datetime | None = None) -> list[str]:
        """Failed jobs older than ``keep_failed_days``: their services and payload copies
        (``snowflake.ml.jobs.delete_job``), and Pipes chunk folders as old."""
        from snowflake.ml import jobs

        now = now or dt.datetime.now(dt.UTC)
        horizon = now - dt.timedelta(days=self.keep_failed_days)
        database, schema = self.connection.schema_fqn
        cursor = session.connection.cursor()
        removed = []
        for prefix in JOB_PREFIXES.values():
            for row in self.job_services(cursor, prefix):
                ended = _timestamp(row.get("updated_on") or row.get("created_on"))
                status = str(row.get("status", "")).upper()
                if status in TERMINAL_STATES and ended is not None and ended < horizon:
                    job_id = f"{database}.{schema}.{row['name']}"
                    jobs.delete_job(job_id, session=session)
                    removed.append(job_id)
        stage = "@" + identifiers.qualified(*self.connection.object_name(self.job_stage))
        newest: dict[str, dt.datetime] = {}
        for row in session.sql(f"LIST {stage}/pipes/").collect():
            name, modified = str(row[0]), _timestamp(row[3])
            folder = name.split("/pipes/", 1)[-1].split("/", 1)[0]
            if modified is not None and folder:
                newest[folder] = max(modified, newest.get(folder, modified))
        for folder, modified in sorted(newest.items()):
            if modified < horizon and all(c.isalnum() or c in "_-" for c in folder):
                session.sql(f"REMOVE {stage}/pipes/{folder}/").collect()
                removed.append(f"{stage}/pipes/{folder}/")
        return removed

    def models_stage(self) -> str:
        """The models stage location the payload copies Hub models to (model_stage.py)."""
        database, schema = self.connection.schema_fqn
        stage = identifiers.validate(self.job_stage, "stage name")
        path = identifiers.validate_stage_path(self.models_path, "models path")
        return f"@{database}.{schema}.{stage}/{path}"

    def run_payload(self, context, extras):
        job = extras.get("job")
        if job is not None and not job.get("model_stage"):
            extras = extras | {"job": job | {"model_stage": self.models_stage()}}
        return self._run(context, extras, PAYLOAD_MODULE, ingest=False)

    def run_ingest(self, context, extras):
        """Download a LibriSpeech subset and PUT it to the stage as an ML Job on the CPU pool."""
        return self._run(context, extras, INGEST_PAYLOAD_MODULE, ingest=True)


def job_name(run_id: str, kind: str) -> str:
    """The job service name for a Dagster run (Snowflake appends ``_<suffix>``)."""
    return JOB_PREFIXES[kind] + run_id.replace("-", "")[:12].upper()


def _timestamp(value) -> dt.datetime | None:
    """A SHOW/LIST time (a datetime, ISO text or ``Thu, 03 Dec 2026 10:00:00 GMT``), aware."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value or "").strip()
    for parse in (
        dt.datetime.fromisoformat,
        lambda s: dt.datetime.strptime(s, "%a, %d %b %Y %H:%M:%S %Z"),
    ):
        try:
            stamp = parse(text)
        except ValueError:
            continue
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    return None


def _describe(cursor, statement: str) -> dict:
    cursor.execute(statement)
    rows = cursor.fetchall()
    if not rows:
        return {}
    names = [str(d[0]).lower() for d in cursor.description]
    return dict(zip(names, rows[0], strict=False))


def _describe_or_none(cursor, statement: str) -> dict | None:
    """DESCRIBE's row, or None when the object does not exist (or is not visible to the role)."""
    try:
        return _describe(cursor, statement) or None
    except Exception as exc:
        if "does not exist" in str(exc) or getattr(exc, "errno", None) == 2003:
            return None
        raise


def _is_access_error(exc: Exception) -> bool:
    return getattr(exc, "errno", None) == 3001 or "Insufficient privileges" in str(exc)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _same(current, wanted) -> bool:
    if isinstance(wanted, bool):
        return str(current).strip().lower() == str(wanted).lower()
    return _int(current) == wanted
