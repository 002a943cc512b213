"""``make snowflake-check``: what a Snowflake account must offer before a run spends credits.

Read-only except one small job. Every line printed is one check, its result and, when it fails,
the fix: the credentials and role; each object ``snowflake_setup`` creates, with the privileges
the running role (and ``--job-role``'s) needs; a runtime image for this client's Python; the GPU
pool's family, state and ``MAX_NODES``; then a one-node smoke ML Job
(``transcription/smoke.py``) that reads one stage file as the payload does, reaches the model
and the package index through the integration, and reports the image against
``transcription/requirements.txt``. Last, the estimated cost of a run and of a day of the sensor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .transcription import identifiers, snowflake_sql

MULTINODE_DOCS = (
    "https://docs.snowflake.com/developer-guide/snowflake-ml/ml-jobs/distributed-ml-jobs"
)
SMOKE_MODULE = "audio_pipeline.transcription.smoke"
USABLE_POOL_STATES = {"IDLE", "ACTIVE", "STARTING", "RESIZING", "SUSPENDED"}

# Cost model (README "Run on Snowflake"): credits per node-hour from Snowflake's Service
# Consumption Table; an XSMALL warehouse bills 1 credit/hour, at least 60 s per resume.
WAREHOUSE_CREDITS_PER_HOUR = {"XSMALL": 1.0}
WAREHOUSE_MIN_BILLED_S = 60.0
# Snowflake's quickstart: ~2,700 dev-clean files (5.4 h of audio) in ~2 min on 5 GPU_NV_S nodes,
# so about 32x real time per node for whisper-large-v3; start-up (node, image, model) per job.
X_REAL_TIME_PER_NODE = 32.0
START_UP_S = 300.0


@dataclass
class Check:
    name: str
    status: str  # "ok", "FAIL", "warn" or "info"
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name}: {self.detail}"
        if self.fix and self.status in ("FAIL", "warn"):
            text += f"  -> fix: {self.fix}"
        return text

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


@dataclass
class Options:
    job_role: str | None = None
    audio_hours: float = 10.0
    smoke_job: bool = True
    model: str | None = None
    engine: str = "transformers"
    job_timeout_s: float = 900.0
    sensor_interval_s: float = 60.0
    sensor_busy_ticks_per_day: int = 24
    stage_name: str = "AUDIO_FILES_STAGE"


# ------------------------------------------------------------------ privileges
def required_privileges(connection, compute, stage_name: str) -> list[tuple[str, str, tuple]]:
    """(object kind as SHOW GRANTS names it, fully qualified name, privileges) a role that runs
    the pipeline needs: sensor ticks, asset runs and the ML Jobs they submit (which run as it)."""
    database, schema = connection.schema_fqn
    fqn = lambda name: ".".join(connection.object_name(name))  # noqa: E731
    (integration,) = compute.external_access_integrations or ["AUDIO_PIPELINE_ACCESS_INTEGRATION"]
    tables = ("AUDIO_FILES", "REFERENCE_TRANSCRIPTS", "TRANSCRIPTS")
    dml = ("SELECT", "INSERT", "UPDATE", "DELETE")
    return [
        ("DATABASE", database, ("USAGE",)),
        # CREATE TABLE: the session's temporary tables; CREATE SERVICE: ML Jobs
        ("SCHEMA", f"{database}.{schema}", ("USAGE", "CREATE TABLE", "CREATE SERVICE")),
        ("WAREHOUSE", connection.warehouse, ("USAGE",)),
        ("STAGE", fqn(stage_name), ("READ", "WRITE")),
        ("STAGE", fqn(compute.job_stage), ("READ", "WRITE")),
        *[("TABLE", fqn(t), dml) for t in tables],
        ("COMPUTE_POOL", compute.pool_name, ("USAGE",)),
        ("COMPUTE_POOL", compute.ingest_pool_name, ("USAGE",)),
        ("INTEGRATION", integration, ("USAGE",)),
    ]


def _norm(name: str) -> str:
    return ".".join(part.strip('"') for part in str(name).split(".")).upper()


def _rows(cursor, statement: str, params: dict | None = None) -> list[dict]:
    snowflake_sql.execute_statement(cursor, statement, params)
    names = [str(d[0]).lower() for d in cursor.description]
    return [dict(zip(names, row, strict=False)) for row in cursor.fetchall()]


def role_grants(cursor, role: str) -> set[tuple[str, str, str]]:
    """(privilege, kind, name) held by ``role`` and every role it inherits."""
    held: set[tuple[str, str, str]] = set()
    todo, seen = [identifiers.validate(role, "role name").upper()], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        statement = identifiers.render("SHOW GRANTS TO ROLE {role}", role=current)
        for row in _rows(cursor, statement):
            kind = str(row.get("granted_on", "")).upper().replace(" ", "_")
            name = _norm(row.get("name", ""))
            if kind == "ROLE":
                todo.append(name)
            held.add((str(row.get("privilege", "")).upper(), kind, name))
    return held


def privilege_checks(cursor, role: str, needs, label: str) -> list[Check]:
    try:
        held = role_grants(cursor, role)
    except Exception as exc:
        return [
            Check(
                f"privileges of {label}",
                "FAIL",
                f"SHOW GRANTS TO ROLE {role} failed: {_short(exc)}",
                f"run the check as a role that may see {role}'s grants (its owner, or "
                "SECURITYADMIN), or grant it to this user",
            )
        ]
    checks = []
    for kind, name, privileges in needs:
        have = {p for p, k, n in held if k == kind and n == _norm(name)}
        missing = [p for p in privileges if p not in have and "OWNERSHIP" not in have]
        what = f"{kind.replace('_', ' ')} {name}"
        if not missing:
            how = "owner" if "OWNERSHIP" in have else ", ".join(privileges)
            checks.append(Check(f"{label} on {what}", "ok", how))
            continue
        grant = f"GRANT {', '.join(missing)} ON {kind.replace('_', ' ')} {name} TO ROLE {role}"
        absent = "missing (or the object does not exist)" if not have else "missing"
        checks.append(
            Check(
                f"{label} on {what}",
                "FAIL",
                f"{', '.join(missing)} {absent}",
                f"`make snowflake-setup SETUP_ARGS='--job-role {role}'` (creates the object and "
                f"grants), or as its owner: {grant};",
            )
        )
    return checks


# ------------------------------------------------------------------ image and pool
def runtime_check(cursor, compute) -> Check:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    selector = {"pythonVersion": python}
    if compute.runtime_environment:
        selector["runtimeEnvironment"] = compute.runtime_environment
    fix = (
        f"no ML Job runtime image for Python {python} on this account. One version of Snowflake's "
        f"multi-node docs says only Python 3.10 clients are supported ({MULTINODE_DOCS}); this "
        "project needs 3.11+. Set the compute resource's runtime_environment to an image tag the "
        "account offers, or ask your Snowflake account team for a 3.11 runtime"
    )
    try:
        rows = snowflake_sql.execute(
            cursor,
            "call_get_ml_job_runtime",
            {"pool": compute.pool_name, "selector": json.dumps(selector)},
        )
    except Exception as exc:
        return Check("runtime image", "FAIL", _short(exc), fix)
    image = str(rows[0][0]) if rows and rows[0][0] else ""
    if not image:
        return Check("runtime image", "FAIL", f"none for Python {python}", fix)
    return Check("runtime image", "ok", f"Python {python} client -> {image}")


def pool_checks(cursor, compute) -> list[Check]:
    from .resources.compute.snowflake_ml import _describe_or_none

    pool = compute.pool_name
    try:
        info = _describe_or_none(cursor, compute.pool_sql()["describe"][0])
    except Exception as exc:
        info, error = None, _short(exc)
    else:
        error = "does not exist or is not visible to this role"
    if info is None:
        return [
            Check(
                f"compute pool {pool}",
                "FAIL",
                error,
                "`make snowflake-setup` (ACCOUNTADMIN creates it and grants USAGE, MONITOR)",
            )
        ]
    family = str(info.get("instance_family") or "").upper()
    state = str(info.get("state") or "").upper()
    max_nodes = int(info.get("max_nodes") or 0)
    target = compute.target_instances
    checks = [
        Check(f"pool {pool} family", "ok", family)
        if family == compute.instance_family.upper() and family.startswith("GPU")
        else Check(
            f"pool {pool} family",
            "FAIL",
            f"{family}, configured {compute.instance_family}",
            "a pool's family cannot change: drop it and re-run `make snowflake-setup`, or set "
            "the compute resource's pool_name/instance_family to a GPU pool",
        )
    ]
    if state in USABLE_POOL_STATES and (state != "SUSPENDED" or _true(info.get("auto_resume"))):
        checks.append(Check(f"pool {pool} state", "ok", state))
    else:
        checks.append(
            Check(
                f"pool {pool} state",
                "FAIL",
                f"{state} (auto_resume {info.get('auto_resume')})",
                f"ALTER COMPUTE POOL {pool} RESUME; or SET AUTO_RESUME = TRUE",
            )
        )
    if max_nodes >= target:
        checks.append(Check(f"pool {pool} MAX_NODES", "ok", f"{max_nodes} >= target {target}"))
    else:
        checks.append(
            Check(
                f"pool {pool} MAX_NODES",
                "FAIL",
                f"{max_nodes} < the job's target_instances {target}",
                f"ALTER COMPUTE POOL {pool} SET MAX_NODES = {target} (or lower target_instances)",
            )
        )
    return checks


# ------------------------------------------------------------------ the smoke job
def first_stage_file(cursor, stage) -> str | None:
    from .resources.stage import is_audio_path

    for name, *_ in snowflake_sql.execute(cursor, "list_stage", stage=stage.stage_fqn):
        path = str(name).split("/", 1)[1] if "/" in str(name) else str(name)
        if is_audio_path(path):
            return path
    return None


def run_smoke_job(compute, settings: dict, timeout_s: float) -> tuple[str, dict | None, str]:
    """Submit the smoke module as a one-node ML Job; (status, its result, log tail)."""
    from snowflake.ml import jobs

    from .resources.compute import build_payload_dir
    from .resources.compute.bundle import PAYLOAD_ENTRY
    from .transcription.smoke import MARK, SETTINGS_ENV

    database, schema = compute.connection.schema_fqn
    with tempfile.TemporaryDirectory(prefix="audio-preflight-") as tmp:
        bundle = build_payload_dir(Path(tmp) / "payload")
        with compute.connection.snowpark_session() as session:
            kwargs = {
                "dir_path": str(bundle),
                "compute_pool": identifiers.validate(compute.pool_name, "compute pool name"),
                "entrypoint": PAYLOAD_ENTRY,
                "args": [SMOKE_MODULE],
                "stage_name": ".".join(
                    (database, schema, identifiers.validate(compute.job_stage, "stage name"))
                ),
                "target_instances": 1,
                "min_instances": 1,
                "external_access_integrations": list(compute.external_access_integrations),
                "env_vars": compute.job_env() | {SETTINGS_ENV: json.dumps(settings)},
                "query_warehouse": compute.connection.warehouse,
                "name": f"PREFLIGHT_{uuid.uuid4().hex[:8].upper()}",
                "database": database,
                "schema": schema,
                "session": session,
            }
            if compute.runtime_environment:
                kwargs["runtime_environment"] = compute.runtime_environment
            job = jobs.submit_directory(**kwargs)
            deadline = time.monotonic() + timeout_s
            while (status := str(job.status)) not in ("DONE", "FAILED", "CANCELLED",
                                                      "INTERNAL_ERROR", "DELETED"):  # fmt: skip
                if time.monotonic() > deadline:
                    job.cancel()
                    status = "TIMEOUT"
                    break
                time.sleep(2)
            try:
                logs = str(job.get_logs(limit=-1))
            except Exception as exc:
                logs = f"(logs unavailable: {_short(exc)})"
            result = None
            for line in logs.splitlines():
                if line.startswith(MARK):
                    result = json.loads(line[len(MARK) :])
            if status == "DONE":
                try:
                    jobs.delete_job(job, session=session)
                except Exception:
                    pass  # the job's clean-up is best effort; it ran
    return status, result, "\n".join(logs.splitlines()[-20:])


def smoke_checks(status: str, result: dict | None, tail: str, settings: dict) -> list[Check]:
    if result is None:
        return [
            Check(
                "smoke job",
                "FAIL",
                f"ended {status} without a result; log tail: {tail[-600:]}",
                "read the log tail; the runtime image, pool and integration checks above name "
                "the usual causes",
            )
        ]
    checks = [Check("smoke job", "ok", f"ended {status} on node {result.get('node')}")]
    read = result.get("read")
    if read is None:
        checks.append(
            Check(
                "stage read in the job",
                "warn",
                "the audio stage is empty: nothing to read",
                "materialize librispeech_audio or PUT one audio file to the stage, then re-run",
            )
        )
    elif read.get("ok"):
        checks.append(
            Check(
                "stage read in the job",
                "ok",
                f"{read['file']}: {read['bytes']} bytes in {read['seconds']} s",
            )
        )
    else:
        checks.append(
            Check(
                "stage read in the job",
                "FAIL",
                f"{read['file']}: {read.get('error')}",
                "the job cannot read the stage the way the payload does; see README 'Run on "
                "Snowflake' (stage reads) and the egress rule (`make snowflake-setup`)",
            )
        )
    model = result.get("model") or {}
    if model.get("ok"):
        checks.append(Check("model", "ok", f"{model.get('model')} ({model.get('source')})"))
    else:
        checks.append(
            Check(
                "model",
                "FAIL",
                f"{model.get('model')}: {model.get('error')}",
                "the egress rule must allow the hub's hosts (`make snowflake-setup`, "
                "`--extra-host`), or set the model to one the job can load",
            )
        )
    index = result.get("index") or {}
    if index.get("ok"):
        checks.append(Check("package index", "ok", f"{index.get('url')} answers"))
    else:
        checks.append(
            Check(
                "package index",
                "FAIL",
                f"{index.get('url')}: {index.get('error')}",
                "the external access integration must allow pypi.org and files.pythonhosted.org "
                "(`make snowflake-setup`); it is used for the job's pip requirements",
            )
        )
    gpu = result.get("gpu") or {}
    if gpu.get("name"):
        torch_cuda = gpu.get("torch_cuda") or "none (CPU build)"
        checks.append(
            Check(
                "GPU",
                "ok",
                f"{gpu['name']}, driver CUDA {gpu.get('driver_cuda')}, torch CUDA {torch_cuda}",
            )
        )
    else:
        checks.append(
            Check(
                "GPU",
                "FAIL",
                "no GPU visible in the job's container ("
                + (gpu.get("error") or "nvidia-smi and torch see none")
                + ")",
                "run on a GPU_NV_* pool (compute resource pool_name / instance_family) with a "
                "GPU runtime image",
            )
        )
    versions = result.get("versions") or {}
    packages = versions.get("packages") or {}
    image = ", ".join(f"{k} {v or 'absent'}" for k, v in packages.items())
    checks.append(Check("image", "info", f"Python {versions.get('python')}, {image}"))
    for req in versions.get("requirements") or []:
        name = f"requirement {req['requirement']}"
        if req.get("satisfied"):
            checks.append(Check(name, "ok", f"the image has {req.get('installed')}"))
        else:
            have = req.get("installed") or "nothing"
            checks.append(
                Check(
                    name,
                    "warn",
                    f"the image has {have}: pip installs it on every node of every job",
                    "fine if intended; pin it to the image's version in "
                    "transcription/requirements.txt to skip the install",
                )
            )
    return checks


# ------------------------------------------------------------------ cost
def estimate_run(audio_hours: float, compute, x_real_time_per_node: float = X_REAL_TIME_PER_NODE,
                 start_up_s: float = START_UP_S) -> dict:  # fmt: skip
    """Credits of one ``transcripts`` run: the GPU nodes from start-up to the pool's suspension
    (its ``min_nodes`` stay until ``auto_suspend_secs`` after the job) and the warehouse that
    merges the rows while the job runs."""
    from .resources.compute.snowflake_ml import CREDITS_PER_NODE_HOUR

    rate = CREDITS_PER_NODE_HOUR.get(compute.instance_family.upper())
    nodes = compute.target_instances
    work_s = audio_hours * 3600.0 / (x_real_time_per_node * nodes)
    job_s = start_up_s + work_s
    tail_s = compute.auto_suspend_secs
    gpu = None
    if rate is not None:
        gpu = rate * (nodes * job_s + compute.min_nodes * tail_s) / 3600.0
    warehouse = WAREHOUSE_CREDITS_PER_HOUR["XSMALL"] * (work_s + WAREHOUSE_MIN_BILLED_S) / 3600.0
    return {
        "audio_hours": audio_hours,
        "nodes": nodes,
        "rate": rate,
        "job_minutes": job_s / 60.0,
        "gpu_credits": gpu,
        "warehouse_credits": warehouse,
        "credits": None if gpu is None else gpu + warehouse,
    }


def estimate_sensor_day(interval_s: float, busy_ticks: int) -> dict:
    """Credits of a day of the new-file sensor: an idle tick runs cloud-services statements only
    (no warehouse); a tick that finds files resumes the warehouse for at least 60 s."""
    ticks = int(86400 / max(1.0, interval_s))
    credits = busy_ticks * WAREHOUSE_MIN_BILLED_S / 3600.0 * WAREHOUSE_CREDITS_PER_HOUR["XSMALL"]
    return {"ticks": ticks, "busy_ticks": busy_ticks, "credits": credits}


def cost_checks(compute, options: Options) -> list[Check]:
    run = estimate_run(options.audio_hours, compute)
    if run["credits"] is None:
        run_text = f"no credit rate known for {compute.instance_family}"
    else:
        run_text = (
            f"{run['credits']:.2f} credits for {options.audio_hours:g} h of audio: "
            f"{run['nodes']} x {compute.instance_family} at {run['rate']} credits/node-hour for "
            f"~{run['job_minutes']:.0f} min (start-up {START_UP_S / 60:.0f} min, "
            f"{X_REAL_TIME_PER_NODE:g}x real time per node), {compute.min_nodes} node(s) until "
            f"auto-suspend ({compute.auto_suspend_secs} s), warehouse "
            f"{run['warehouse_credits']:.2f}"
        )
    day = estimate_sensor_day(options.sensor_interval_s, options.sensor_busy_ticks_per_day)
    day_text = (
        f"{day['credits']:.2f} credits/day: {day['ticks']} ticks, idle ones resume no warehouse; "
        f"{day['busy_ticks']} ticks with new files at 60 s of XSMALL each (runs not included)"
    )
    return [
        Check("cost of one transcripts run", "info", run_text),
        Check("cost of a day of the sensor", "info", day_text),
    ]


# ------------------------------------------------------------------ all of it
def run_checks(connection, compute, stage, options: Options, echo=None) -> list[Check]:
    """Every check in order; ``echo`` (e.g. print) gets each line as it is decided."""
    checks: list[Check] = []

    def add(*new: Check) -> None:
        for check in new:
            checks.append(check)
            if echo:
                echo(check.line())

    try:
        conn_cm = connection.connect(use_schema=False)
        conn = conn_cm.__enter__()
    except Exception as exc:
        add(
            Check(
                "credentials",
                "FAIL",
                _short(exc),
                "export SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER and SNOWFLAKE_PASSWORD (or a key "
                "pair, or SNOWFLAKE_CONNECTION_NAME); see README 'Run on Snowflake'",
            )
        )
        return checks
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT CURRENT_ROLE(), CURRENT_USER()")
        role, user = cursor.fetchall()[0]
        add(Check("credentials", "ok", f"connected as {user}, role {role}"))
        needs = required_privileges(connection, compute, options.stage_name)
        add(*privilege_checks(cursor, str(role), needs, f"role {role}"))
        if options.job_role and options.job_role.upper() != str(role).upper():
            job_role = identifiers.validate(options.job_role, "role name")
            add(*privilege_checks(cursor, job_role, needs, f"job role {job_role}"))
        add(runtime_check(cursor, compute))
        add(*pool_checks(cursor, compute))
        ready = not any(c.failed for c in checks)
        if not options.smoke_job:
            add(Check("smoke job", "info", "skipped (--no-job)"))
        elif not ready:
            add(
                Check(
                    "smoke job",
                    "FAIL",
                    "not submitted: fix the failures above first",
                    "re-run `make snowflake-check` after the fixes above",
                )
            )
        else:
            settings = {
                "stage": stage.payload_spec(),
                "file": first_stage_file(cursor, stage),
                "model": options.model or compute.default_model,
                "engine": options.engine,
                "home": compute.home,
            }
            status, result, tail = run_smoke_job(compute, settings, options.job_timeout_s)
            add(*smoke_checks(status, result, tail, settings))
    finally:
        conn_cm.__exit__(None, None, None)
    add(*cost_checks(compute, options))
    return checks


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _true(value) -> bool:
    return str(value).strip().lower() == "true"


def main(argv: list[str] | None = None) -> int:
    from .profiles import snowflake_resources

    parser = argparse.ArgumentParser(prog="python -m audio_pipeline.snowflake_preflight")
    parser.add_argument("--job-role", default=None, help="also check this role's privileges")
    parser.add_argument("--hours", type=float, default=10.0, help="audio hours for the estimate")
    parser.add_argument("--no-job", action="store_true", help="skip the smoke ML Job")
    parser.add_argument("--model", default=None, help="model the smoke job reaches")
    parser.add_argument("--engine", default="transformers", help="engine the model is for")
    parser.add_argument("--timeout", type=float, default=900.0, help="smoke job limit, seconds")
    args = parser.parse_args(argv)
    resources = snowflake_resources(dict(os.environ))
    options = Options(
        job_role=args.job_role,
        audio_hours=args.hours,
        smoke_job=not args.no_job,
        model=args.model,
        engine=args.engine,
        job_timeout_s=args.timeout,
    )
    with resources["compute"].connection.process_config_and_initialize_cm() as connection:
        compute = resources["compute"].model_copy(update={"connection": connection})
        stage = resources["stage"].model_copy(update={"connection": connection})
        checks = run_checks(connection, compute, stage, options, echo=print)
    failed = sum(c.failed for c in checks)
    print(f"{len(checks)} checks, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
