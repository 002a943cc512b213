"""An emulated Snowflake account: the real SDKs above, only Snowflake's SQL/REST endpoint faked.

Everything a job submission touches runs unchanged: the Snowflake connector, Snowpark,
``snowflake.ml.jobs.submit_directory``, ``MLJob`` (status, logs, cancel) and the job launcher
script that ships in the snowflake-ml-python wheel (``mljob_launcher.py``, uploaded by the SDK to
the job's stage and run from there). What answers them is one HTTP server speaking Snowflake's
query protocol:

* fakesnow (DuckDB) answers tables, MERGE, PUT and LIST, with its stage files in a local bucket;
* the statements fakesnow lacks are answered here, as Snowflake's documentation describes them:
  ``CALL SYSTEM$EXECUTE_ML_JOB`` (the SDK's job submission), ``DESCRIBE SERVICE`` going
  PENDING → RUNNING → DONE | FAILED (CANCELLING → CANCELLED after ``!spcs_cancel_job``),
  ``SHOW SERVICE INSTANCES``, ``SYSTEM$GET_SERVICE_LOGS`` (the last 100 KB of a container's
  output, start-up noise first, "Container Status: PENDING" before it starts, gone some time after
  it ends, when the SDK falls back to ``!spcs_get_logs``, an event-table source with its own line
  splitting), ``CREATE/ALTER/DESCRIBE/SHOW COMPUTE POOL`` with the grants setup gives,
  ``GET`` from a stage, ``USE ROLE`` and the setup DDL (network rule, integration, grants),
  checked against the documented grammar.

A job runs as the container would: instance 0 runs the launcher from the job's stage directory
(the stage mount) in a subprocess with the runtime's environment (``SNOWFLAKE_*`` variables, an
OAuth token file, ``SNOWFLAKE_JOBS_COUNT``, ``MLRS_*``), so that ``get_active_session()`` in the
payload is the launcher's Snowpark session (paramstyle ``qmark``), attached to the given Ray
cluster. Other instances are the worker containers: their logs hold the worker start-up lines.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import fakesnow_http, grammar

log = logging.getLogger(__name__)

LOG_CAP_BYTES = 100 * 1024  # SYSTEM$GET_SERVICE_LOGS returns at most the last 100 KB
EVENT_RECORD_CHARS = 2048  # the event-table log source splits long lines into records
RUNTIME_IMAGE = (
    "/snowflake/images/snowflake_images/st_plat/runtime/x86/generic_gpu/runtime_image/"
    "snowbooks:1.8.0"
)
STAGE_MOUNT = "/mnt/job_stage"


class SnowflakeError(Exception):
    def __init__(self, code: int, message: str, sqlstate: str = "42000"):
        super().__init__(message)
        self.code = code
        self.message = message
        self.sqlstate = sqlstate


def _not_found(kind: str, name: str) -> SnowflakeError:
    return SnowflakeError(
        2003, f"SQL compilation error:\n{kind} '{name}' does not exist or not authorized.", "02000"
    )


def _denied(what: str) -> SnowflakeError:
    return SnowflakeError(
        3001, f"SQL access control error:\nInsufficient privileges to operate on {what}"
    )


def norm_ident(part: str) -> str:
    part = part.strip()
    if part.startswith('"') and part.endswith('"'):
        return part[1:-1].replace('""', '"')
    return part.upper()


def split_name(name: str) -> list[str]:
    """``"DB".SCH.x`` → ``["DB", "SCH", "X"]`` (quotes honoured)."""
    parts, current, quoted = [], "", False
    for ch in name.strip():
        if ch == '"':
            quoted = not quoted
            current += ch
        elif ch == "." and not quoted:
            parts.append(norm_ident(current))
            current = ""
        else:
            current += ch
    parts.append(norm_ident(current))
    return parts


def parse_literals(text: str) -> list[str]:
    """The single-quoted string literals of ``text`` (backslash escapes and '' honoured)."""
    out, i = [], 0
    escapes = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "b": "\b", "Z": "\x1a"}
    while i < len(text):
        if text[i] != "'":
            i += 1
            continue
        i += 1
        buf = []
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                buf.append(escapes.get(text[i + 1], text[i + 1]))
                i += 2
            elif ch == "'" and text[i + 1 : i + 2] == "'":
                buf.append("'")
                i += 2
            elif ch == "'":
                i += 1
                break
            else:
                buf.append(ch)
                i += 1
        out.append("".join(buf))
    return out


@dataclass
class ComputePool:
    name: str
    instance_family: str
    min_nodes: int = 1
    max_nodes: int = 1
    auto_resume: bool = True
    auto_suspend_secs: int = 3600
    state: str = "IDLE"
    owner: str = "ACCOUNTADMIN"
    grants: dict[str, set[str]] = field(default_factory=dict)

    def row(self, active: int = 0) -> dict:
        return {
            "name": self.name,
            "state": self.state,
            "min_nodes": self.min_nodes,
            "max_nodes": self.max_nodes,
            "instance_family": self.instance_family,
            "num_services": 0,
            "num_jobs": 0,
            "auto_suspend_secs": self.auto_suspend_secs,
            "auto_resume": str(self.auto_resume).lower(),
            "active_nodes": active,
            "idle_nodes": max(0, self.min_nodes - active),
            "target_nodes": max(self.min_nodes, active),
            "owner": self.owner,
        }


@dataclass
class Instance:
    index: int
    log_path: Path
    proc: subprocess.Popen | None = None
    started_at: float | None = None
    ended_at: float | None = None
    extra_log: Path | None = None

    def text(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if self.extra_log is not None and self.extra_log.exists():
            text += self.extra_log.read_text(errors="replace")
        return text


@dataclass
class Job:
    id: str
    name: str
    database: str
    schema: str
    pool: str
    stage_path: str
    mount: Path
    env: dict
    args: list[str]
    target_instances: int
    min_instances: int
    warehouse: str | None
    integrations: list[str]
    submitted_at: float
    workdir: Path
    instances: list[Instance] = field(default_factory=list)
    status: str = "PENDING"
    cancel_requested: bool = False
    ended_at: float | None = None
    returncode: int | None = None
    failure: tuple[int, str] | None = None  # (instance, message) injected by a test

    @property
    def head(self) -> Instance:
        return self.instances[0]

    def spec_yaml(self) -> str:
        import yaml

        spec = {
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": RUNTIME_IMAGE,
                        "command": self.args,
                        "env": self.env,
                        "volumeMounts": [
                            {"name": "dshm", "mountPath": "/dev/shm"},
                            {"name": "stage-volume", "mountPath": STAGE_MOUNT},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "dshm", "source": "memory", "size": "8Gi"},
                    {"name": "stage-volume", "source": self.stage_path},
                ],
            }
        }
        return yaml.safe_dump(spec)


def startup_noise(n: int, job: Job) -> str:
    """What a container prints before the launcher runs: pip, ML runtime and Ray start-up."""
    lines = [
        "Installing packages from /mnt/job_stage/system/requirements.txt",
        "Looking in links: /opt/wheels",
        "Requirement already satisfied: cloudpickle~=3.0 in /opt/env/site-packages (3.1.1)",
        "Installing packages from requirements.txt",
    ]
    pkgs = ["dagster-pipes", "soundfile", "librosa", "transformers", "numba", "audioread"]
    i = 0
    while len(lines) < n - 8:
        pkg = pkgs[i % len(pkgs)]
        lines.append(f"Collecting {pkg} (from -r requirements.txt (line {i % 9 + 1}))")
        lines.append(f"  Downloading {pkg}-{i}.0-py3-none-any.whl (1.{i} MB)")
        i += 1
    lines += [
        "Creating log directories...",
        " * Starting periodic command scheduler cron",
        f"Shared memory size: {8 << 30} bytes",
        "Dashboard enabled: true",
        "Local node IP: 10.244.1.7",
        "Ray runtime started.",
        f"Head Instance Index: 0 (of {job.target_instances})",
        "Running command: python /mnt/job_stage/system/mljob_launcher.py " + " ".join(job.args[2:]),
    ]
    return "\n".join(lines[:n]) + "\n"


class EmulatedAccount:
    """One emulated account: an HTTP server (fakesnow + the answers above) and its jobs.

    Args:
        work_dir: where job containers keep their logs, homes and token files.
        ray_address: GCS address (``127.0.0.1:port``) of the Ray cluster jobs attach to.
        worker_logs: per worker instance (1, 2, ...), a file whose text is appended to that
            instance's log (for example the worker raylet's output).
        startup_lines: lines of start-up noise before the launcher's output.
        pending_s: how long a job stays PENDING before its head container starts.
        logs_retained_s: after a job ends, how long ``SYSTEM$GET_SERVICE_LOGS`` still answers
            (None: always); afterwards the SDK reads ``!spcs_get_logs``.
        create_pool_roles: roles with CREATE COMPUTE POOL on the account (None: every role).
    """

    def __init__(
        self,
        work_dir: Path,
        ray_address: str | None = None,
        worker_logs: list[Path] | None = None,
        startup_lines: int = 40,
        pending_s: float = 1.0,
        logs_retained_s: float | None = None,
        create_pool_roles: set[str] | None = None,
        python: str = sys.executable,
    ):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ray_address = ray_address
        self.worker_logs = list(worker_logs or [])
        self.startup_lines = startup_lines
        self.pending_s = pending_s
        self.logs_retained_s = logs_retained_s
        self.create_pool_roles = create_pool_roles
        self.python = python
        self.pools: dict[str, ComputePool] = {}
        self.jobs: dict[str, Job] = {}
        self.statements: list[tuple[str, str]] = []  # (role, sql) of what this module answered
        self.ddl: list[str] = []  # setup DDL accepted (network rule, integration, grants)
        self.roles: dict[str, str] = {}  # session token -> current role
        self.default_role = "SYSADMIN"
        self.extra_env: dict[str, str] = {}
        self._lock = threading.RLock()
        self._server = None
        self._thread = None
        self.port: int | None = None
        self._handlers: list[tuple[re.Pattern, Callable]] = [
            (r"CALL\s+SYSTEM\$EXECUTE_ML_JOB\s*\(", self._execute_ml_job),
            (r"CALL\s+SYSTEM\$GET_ML_JOB_RUNTIME\s*\(", self._runtime),
            (r"DESCRIBE\s+SERVICE\s+", self._describe_service),
            (r"SHOW\s+SERVICE\s+INSTANCES\s+IN\s+SERVICE\s+", self._show_instances),
            (r"SELECT\s+SYSTEM\$GET_SERVICE_LOGS\s*\(", self._service_logs),
            (r"SELECT\s+LOG\s+FROM\s+table\s*\((.+?)!spcs_get_logs", self._event_logs),
            (r"CALL\s+(.+?)!spcs_cancel_job\s*\(", self._cancel),
            (r"CALL\s+(.+?)!spcs_wait_for\s*\(", self._wait_for),
            (r"CREATE\s+COMPUTE\s+POOL\s+", self._create_pool),
            (r"ALTER\s+COMPUTE\s+POOL\s+", self._alter_pool),
            (r"(DESCRIBE|DESC)\s+COMPUTE\s+POOL\s+", self._describe_pool),
            (r"SHOW\s+COMPUTE\s+POOLS", self._show_pools),
            (r"USE\s+ROLE\s+", self._use_role),
            (r"(CREATE|ALTER)\s+NETWORK\s+RULE\s+", self._setup_ddl),
            (r"CREATE\s+EXTERNAL\s+ACCESS\s+INTEGRATION\s+", self._setup_ddl),
            (r"GRANT\s+", self._grant),
            (r"CREATE\s+WAREHOUSE\s+", self._setup_ddl),
            (
                r"(describe|create)\s+stage\s+(if\s+not\s+exists\s+)?identifier\s*\(\s*\?\s*\)",
                self._stage_identifier,
            ),
            (r"GET\s+", self._get),
            (r"ALTER\s+STAGE\s+.*\bREFRESH\b", self._refresh_stage),
            (r"(?=.*\bFROM\s+DIRECTORY\s*\()", self._directory),
            (r"(?=.*\bget_presigned_url\s*\()", self._presigned),
            (r"(LIST|LS)\s+'?@[^/\s']+/\S", self._list_path),
            (r"select\s+system\$cancel_all_queries\s*\(", self._cancel_queries),
        ]
        self._handlers = [(re.compile(p, re.I | re.S), h) for p, h in self._handlers]

    # ---------------------------------------------------------------- server
    def start(self) -> dict:
        """Start the server; returns connector keyword arguments for it."""
        import uvicorn

        self.port = _free_port()
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="emulated account", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the emulated account did not start")
            time.sleep(0.05)
        return self.connection_kwargs()

    def connection_kwargs(self) -> dict:
        return {
            "account": "emulated",
            "user": "fake",
            "password": "snow",
            "host": "127.0.0.1",
            "port": self.port,
            "protocol": "http",
            "session_parameters": {},
        }

    def stop(self) -> None:
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            self._kill(job)
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def _app(self):
        import fakesnow.server as fs
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def query(request):
            body = await request.body()
            if request.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            data = json.loads(body)
            sql = data.get("sqlText", "")
            stripped = _strip_comments(sql)
            for pattern, handler in self._handlers:
                match = pattern.match(stripped)
                if not match:
                    continue
                try:
                    token = fs.to_token(request)
                    conn = fs.to_conn(token)
                except fs.ServerError as e:
                    return JSONResponse(
                        {"data": None, "code": e.code, "message": e.message, "success": False},
                        status_code=e.status_code,
                    )
                params = _bindings(data.get("bindings"))
                ctx = _Ctx(token, conn, self.roles.get(token, self.default_role))
                try:
                    answer = await run_in_threadpool(handler, match, stripped, params, ctx)
                except SnowflakeError as e:
                    return JSONResponse(_error(e))
                with self._lock:
                    self.statements.append((ctx.role, stripped))
                if isinstance(answer, dict) and answer.get("command"):
                    return JSONResponse({"data": answer, "success": True})
                columns, rows = answer
                return JSONResponse(_result(columns, rows, conn))
            rewritten = _unquote_put_target(sql)
            if rewritten != sql:
                data["sqlText"] = rewritten
                raw = json.dumps(data).encode()
                if request.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.compress(raw)
                request._body = raw
            return await fs.query_request(request)

        async def telemetry(_request):
            return JSONResponse({"success": True})

        async def presigned(request):
            from fakesnow.transforms import stage as fs_stage
            from starlette.responses import FileResponse, Response

            root = Path(fs_stage.LOCAL_BUCKET_PATH).resolve()
            target = (root / request.path_params["path"]).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                return Response(status_code=404)
            return FileResponse(target)

        # fakesnow's routes with the login answer it lacks; the query endpoint is ours (below)
        routes = [r for r in fakesnow_http.routes() if r.path != "/queries/v1/query-request"]
        routes += [
            Route("/queries/v1/query-request", query, methods=["POST"]),
            Route("/telemetry/send", telemetry, methods=["POST"]),
            Route("/presigned/{path:path}", presigned, methods=["GET", "HEAD"]),
        ]
        return Starlette(routes=routes)

    # ---------------------------------------------------------------- roles and setup DDL
    def _use_role(self, match, sql, params, ctx):
        role = norm_ident(sql[match.end() :].strip().rstrip(";"))
        self.roles[ctx.token] = role
        return ["status"], [["Statement executed successfully."]]

    def _setup_ddl(self, match, sql, params, ctx):
        text = _inline(sql, params)
        grammar.check(text)
        self.ddl.append(text)
        return ["status"], [["Statement executed successfully."]]

    def _grant(self, match, sql, params, ctx):
        text = _inline(sql, params)
        grammar.check(text)
        self.ddl.append(text)
        m = re.match(
            r"GRANT\s+(.+?)\s+ON\s+COMPUTE\s+POOL\s+(\S+)\s+TO\s+ROLE\s+(\S+)", text, re.I | re.S
        )
        if m:
            pool = self.pools.get(split_name(m.group(2))[-1])
            if pool is not None:
                privs = {p.strip().upper() for p in m.group(1).split(",")}
                pool.grants.setdefault(norm_ident(m.group(3)), set()).update(privs)
        return ["status"], [["Statement executed successfully."]]

    def _stage_identifier(self, match, sql, params, ctx):
        name = split_name(str(params[0]).lstrip("@"))
        db, schema, stage = _qualify(name, ctx.conn)
        root = _bucket_dir(db, schema, stage)
        if match.group(1).lower() == "describe":
            if not self._stage_known(ctx, db, schema, stage):
                raise _not_found("Stage", f"{db}.{schema}.{stage}")
            return ["parent_property", "property"], [["STAGE_LOCATION", "URL"]]
        root.mkdir(parents=True, exist_ok=True)
        return ["status"], [[f"Stage area {stage} successfully created."]]

    def _stage_known(self, ctx, db, schema, stage) -> bool:
        cur = ctx.conn.cursor()
        try:
            cur.execute(f'LIST @"{db}"."{schema}"."{stage}"')
            return True
        except Exception:
            return False

    # ---------------------------------------------------------------- compute pools
    def _pool_options(self, text: str) -> dict:
        return {k.upper(): v.strip("'") for k, v in re.findall(r"(\w+)\s*=\s*('[^']*'|\S+)", text)}

    def _create_pool(self, match, sql, params, ctx):
        text = _inline(sql, params)
        grammar.check(text)
        if self.create_pool_roles is not None and ctx.role not in self.create_pool_roles:
            raise _denied(f"account '{ctx.conn.database or 'EMULATED'}'")
        m = re.match(
            r"CREATE\s+COMPUTE\s+POOL\s+(IF\s+NOT\s+EXISTS\s+)?(\S+)(.*)", text, re.I | re.S
        )
        name = split_name(m.group(2))[-1]
        opts = self._pool_options(m.group(3))
        with self._lock:
            if name in self.pools:
                if not m.group(1):
                    raise SnowflakeError(
                        2002, f"SQL compilation error:\nObject '{name}' already exists."
                    )
                return ["status"], [[f"{name} already exists, statement succeeded."]]
            self.pools[name] = ComputePool(
                name=name,
                instance_family=opts.get("INSTANCE_FAMILY", "CPU_X64_XS"),
                min_nodes=int(opts.get("MIN_NODES", 1)),
                max_nodes=int(opts.get("MAX_NODES", 1)),
                auto_resume=opts.get("AUTO_RESUME", "TRUE").upper() == "TRUE",
                auto_suspend_secs=int(opts.get("AUTO_SUSPEND_SECS", 3600)),
                state="SUSPENDED"
                if opts.get("INITIALLY_SUSPENDED", "").upper() == "TRUE"
                else "IDLE",
                owner=ctx.role,
            )
        return ["status"], [[f"Compute Pool {name} successfully created."]]

    def _pool(self, text: str, ctx, needs: set[str]) -> ComputePool:
        name = split_name(text.split()[0].rstrip(";"))[-1]
        pool = self.pools.get(name)
        if pool is None or not self._may(pool, ctx.role, needs):
            raise _not_found("Compute pool", name)
        return pool

    def _may(self, pool: ComputePool, role: str, needs: set[str]) -> bool:
        if role in (pool.owner, "ACCOUNTADMIN"):
            return True
        return bool(pool.grants.get(role, set()) & needs)

    def _alter_pool(self, match, sql, params, ctx):
        text = _inline(sql, params)
        grammar.check(text)
        rest = text[match.end() :]
        pool = self._pool(rest, ctx, {"USAGE", "MONITOR", "MODIFY", "OPERATE"})
        opts = self._pool_options(rest)
        if set(opts) - {"SUSPEND", "RESUME"} and not self._may(pool, ctx.role, {"MODIFY"}):
            raise _denied(f"compute pool '{pool.name}'")
        with self._lock:
            for key, attr in (("MIN_NODES", "min_nodes"), ("MAX_NODES", "max_nodes")):
                if key in opts:
                    setattr(pool, attr, int(opts[key]))
            if "AUTO_RESUME" in opts:
                pool.auto_resume = opts["AUTO_RESUME"].upper() == "TRUE"
            if "AUTO_SUSPEND_SECS" in opts:
                pool.auto_suspend_secs = int(opts["AUTO_SUSPEND_SECS"])
        return ["status"], [["Statement executed successfully."]]

    def _describe_pool(self, match, sql, params, ctx):
        pool = self._pool(_inline(sql, params)[match.end() :], ctx, {"USAGE", "MONITOR"})
        row = pool.row(self._active_nodes(pool.name))
        return list(row), [list(row.values())]

    def _show_pools(self, match, sql, params, ctx):
        like = re.search(r"LIKE\s+('[^']*'|\?)", sql, re.I)
        pattern = None
        if like:
            pattern = params[0] if like.group(1) == "?" else parse_literals(like.group(1))[0]
        rows = []
        for pool in self.pools.values():
            if pattern and not _like(pool.name, pattern):
                continue
            if self._may(pool, ctx.role, {"USAGE", "MONITOR"}):
                rows.append(pool.row(self._active_nodes(pool.name)))
        columns = list(ComputePool("x", "x").row())
        return columns, [list(r.values()) for r in rows]

    def _active_nodes(self, pool: str) -> int:
        return sum(
            len(j.instances) for j in self.jobs.values() if j.pool == pool and j.status == "RUNNING"
        )

    def _runtime(self, match, sql, params, ctx):
        return ["SYSTEM$GET_ML_JOB_RUNTIME"], [[RUNTIME_IMAGE]]

    # ---------------------------------------------------------------- jobs
    def _execute_ml_job(self, match, sql, params, ctx):
        args = params if params else parse_literals(sql[match.end() :])
        job_def, pool_name, spec_json, options_json = (str(a) for a in args[:4])
        spec = json.loads(spec_json)
        options = json.loads(options_json)
        pool = self.pools.get(split_name(pool_name)[-1])
        if pool is None or not self._may(pool, ctx.role, {"USAGE"}):
            raise _not_found("Compute pool", pool_name)
        db, schema, name = _qualify(split_name(job_def), ctx.conn)
        if name.endswith("_"):
            name = f"{name}{secrets.token_hex(4).upper()}"
        job_id = f"{db}.{schema}.{name}"
        stage_path = spec["STAGE_PATH"]
        sdb, sschema, sname, *rest = _stage_parts(stage_path, ctx.conn)
        mount = _bucket_dir(sdb, sschema, sname) / "/".join(rest)
        if not (mount / "system" / "mljob_launcher.py").is_file():
            raise SnowflakeError(1, f"payload not found on stage {stage_path}")
        target = int(options.get("TARGET_INSTANCES") or 1)
        workdir = self.work_dir / name
        workdir.mkdir(parents=True, exist_ok=True)
        job = Job(
            id=job_id,
            name=name,
            database=db,
            schema=schema,
            pool=pool.name,
            stage_path=stage_path,
            mount=mount,
            env=dict(spec.get("ENV_VARS") or {}),
            args=list(spec.get("ARGS") or []),
            target_instances=target,
            min_instances=int(options.get("MIN_INSTANCES") or target),
            warehouse=options.get("QUERY_WAREHOUSE"),
            integrations=list(options.get("EXTERNAL_ACCESS_INTEGRATIONS") or []),
            submitted_at=time.monotonic(),
            workdir=workdir,
        )
        for i in range(target):
            extra = self.worker_logs[i - 1] if 0 < i <= len(self.worker_logs) else None
            job.instances.append(Instance(i, workdir / f"instance-{i}.log", extra_log=extra))
        with self._lock:
            self.jobs[job_id] = job
            pool.state = "ACTIVE"
        threading.Thread(target=self._run, args=(job,), name=f"job {name}", daemon=True).start()
        return ["SYSTEM$EXECUTE_ML_JOB"], [[job_id]]

    def _container_env(self, job: Job, index: int) -> dict:
        token = job.workdir / "token"
        token.write_text(secrets.token_urlsafe(24))
        env = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ}
        env |= {
            "HOME": str(job.workdir / "home"),
            "PYTHONUNBUFFERED": "1",
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            # what SPCS gives every container of a service
            "SNOWFLAKE_ACCOUNT": "EMULATED",
            "SNOWFLAKE_HOST": "127.0.0.1",
            "SNOWFLAKE_PORT": str(self.port),
            "SNOWFLAKE_PROTOCOL": "http",  # real containers: https
            "SNOWFLAKE_DATABASE": job.database,
            "SNOWFLAKE_SCHEMA": job.schema,
            "SNOWFLAKE_SERVICE_NAME": job.name,
            "SNOWFLAKE_TOKEN_FILE": str(token),
            "SNOWFLAKE_JOBS_COUNT": str(job.target_instances),
            "SNOWFLAKE_JOB_INDEX": str(index),
            "MLRS_MIN_INSTANCES": str(job.min_instances),
            "MLRS_INSTANCES_CHECK_INTERVAL": "1",
        }
        if job.warehouse:
            env["SNOWFLAKE_WAREHOUSE"] = job.warehouse
        if self.ray_address:
            # the container's Ray node; a loopback cluster here, so Ray must not swap 127.0.0.1
            # for the host's address (a container's eth0 address is what SPCS Ray uses)
            env["RAY_ADDRESS"] = self.ray_address
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        (job.workdir / "home").mkdir(exist_ok=True)
        for key, value in job.env.items():
            env[key] = str(value).replace(STAGE_MOUNT, str(job.mount))
        return env | self.extra_env

    def _run(self, job: Job) -> None:
        try:
            time.sleep(self.pending_s)
            with self._lock:
                if job.cancel_requested:
                    job.status, job.ended_at = "CANCELLED", time.monotonic()
                    return
                job.status = "RUNNING"
            for inst in job.instances:
                inst.started_at = time.time()
                noise = (
                    startup_noise(self.startup_lines, job)
                    if inst.index == 0
                    else (
                        startup_noise(self.startup_lines // 2, job).split("Running command")[0]
                        + f"Worker node started on address 127.0.0.{inst.index + 10}. "
                        "See more logs in the head node.\nStarting worker shutdown listener...\n"
                    )
                )
                inst.log_path.write_text(noise)
            # startup.sh on the head: python ${SYSTEM_DIR}/mljob_launcher.py "$@"
            launcher_args = [a.replace(STAGE_MOUNT, str(job.mount)) for a in job.args[2:]]
            cmd = [self.python, str(job.mount / "system" / "mljob_launcher.py"), *launcher_args]
            with open(job.head.log_path, "ab") as out:
                proc = subprocess.Popen(
                    cmd,
                    cwd=job.mount / job.env.get("MLRS_PAYLOAD_DIR", "app"),
                    env=self._container_env(job, 0),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            job.head.proc = proc
            rc = proc.wait()
            if job.failure is not None:
                index, message = job.failure
                with open(job.instances[index].log_path, "a") as f:
                    f.write(message.rstrip("\n") + "\n")
                rc = rc or 1
            with open(job.head.log_path, "a") as f:
                f.write("User job completed. Signaling workers to shut down...\n")
                f.write("Head node job completed. Exiting.\n")
            for inst in job.instances[1:]:
                with open(inst.log_path, "a") as f:
                    f.write("Worker shutdown listener exited with code 0\n")
            with self._lock:
                job.returncode = rc
                now = time.monotonic()
                for inst in job.instances:
                    inst.ended_at = now
                job.ended_at = now
                if job.cancel_requested:
                    job.status = "CANCELLED"
                else:
                    job.status = "DONE" if rc == 0 else "FAILED"
        except Exception as exc:  # the emulator itself failed: say so in the job
            log.exception("emulated job %s", job.id)
            with open(job.head.log_path, "a") as f:
                f.write(f"emulator error: {exc!r}\n")
            job.status, job.ended_at = "INTERNAL_ERROR", time.monotonic()

    def fail_on_instance(self, job_id: str, index: int, message: str) -> None:
        """Make ``job_id`` end FAILED with ``message`` in instance ``index``'s log (a worker
        container that died: OOM, a GPU error), killing the head as SPCS would."""
        job = self.jobs[job_id]
        job.failure = (index, message)
        self._kill(job)

    def _job(self, ref: str, ctx) -> Job:
        db, schema, name = _qualify(split_name(ref), ctx.conn)
        job = self.jobs.get(f"{db}.{schema}.{name}")
        if job is None:
            raise _not_found("Service", f"{db}.{schema}.{name}")
        return job

    def _describe_service(self, match, sql, params, ctx):
        ref = params[0] if params else sql[match.end() :].strip()
        job = self._job(str(ref), ctx)
        running = sum(1 for i in job.instances if i.started_at and not i.ended_at)
        row = {
            "name": job.name,
            "status": job.status,
            "database_name": job.database,
            "schema_name": job.schema,
            "owner": "SYSADMIN",
            "compute_pool": job.pool,
            "spec": job.spec_yaml(),
            "dns_name": f"{job.name.lower()}.emulated.svc.spcs.internal",
            "current_instances": running,
            "target_instances": job.target_instances,
            "min_ready_instances": job.min_instances,
            "min_instances": job.min_instances,
            "max_instances": job.target_instances,
            "query_warehouse": job.warehouse,
            "external_access_integrations": json.dumps(job.integrations),
            "is_job": "true",
            "is_async_job": "true",
        }
        return list(row), [list(row.values())]

    def _show_instances(self, match, sql, params, ctx):
        ref = params[0] if params else sql[match.end() :].strip()
        job = self._job(str(ref), ctx)
        cols = [
            "database_name",
            "schema_name",
            "service_name",
            "instance_id",
            "status",
            "spec_digest",
            "creation_time",
            "start_time",
        ]
        rows = []
        for inst in job.instances:
            status = (
                "PENDING"
                if inst.started_at is None
                else ("TERMINATED" if inst.ended_at else "READY")
            )
            start = (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(inst.started_at))
                if inst.started_at
                else None
            )
            rows.append(
                [
                    job.database,
                    job.schema,
                    job.name,
                    str(inst.index),
                    status,
                    "d1g35t",
                    start,
                    start,
                ]
            )
        return cols, rows

    def _instance(self, job: Job, index) -> Instance:
        index = int(index or 0)
        if not 0 <= index < len(job.instances):
            raise SnowflakeError(391812, f"Instance {index} of service {job.name} does not exist.")
        return job.instances[index]

    def _service_logs(self, match, sql, params, ctx):
        job = self._job(str(params[0]), ctx)
        inst = self._instance(job, params[1])
        if inst.started_at is None:
            raise SnowflakeError(
                391813, f"Container Status: PENDING. Container {params[2]} has not started yet."
            )
        if (
            self.logs_retained_s is not None
            and job.ended_at is not None
            and time.monotonic() - job.ended_at > self.logs_retained_s
        ):
            raise SnowflakeError(
                391811,
                f"Service {job.name} has no running instance {inst.index}: "
                "container logs are gone.",
            )
        text = inst.text()
        if len(params) > 3 and int(params[3]) > 0:
            text = "\n".join(text.splitlines()[-int(params[3]) :]) + "\n"
        data = text.encode()
        if len(data) > LOG_CAP_BYTES:
            text = data[-LOG_CAP_BYTES:].decode(errors="replace")
        return ["SYSTEM$GET_SERVICE_LOGS"], [[text]]

    def _event_logs(self, match, sql, params, ctx):
        job = self._job(match.group(1), ctx)
        m = re.search(r"INSTANCE_ID\s*=\s*(\d+)", sql, re.I)
        inst = self._instance(job, m.group(1) if m else 0)
        records = []
        for line in inst.text().splitlines(keepends=True):
            while len(line) > EVENT_RECORD_CHARS:
                records.append(line[:EVENT_RECORD_CHARS])
                line = line[EVENT_RECORD_CHARS:]
            records.append(line)
        return ["LOG"], [[r] for r in records]

    def _cancel(self, match, sql, params, ctx):
        job = self._job(match.group(1), ctx)
        with self._lock:
            job.cancel_requested = True
            if job.status in ("PENDING", "RUNNING"):
                job.status = "CANCELLING"
        self._kill(job)
        return ["status"], [[f"Job {job.name} cancelled."]]

    def _cancel_queries(self, match, sql, params, ctx):
        # Session.close(): nothing runs asynchronously here
        return ["SYSTEM$CANCEL_ALL_QUERIES"], [["0 queries cancelled"]]

    def _wait_for(self, match, sql, params, ctx):
        raise SnowflakeError(2140, "Unknown function SPCS_WAIT_FOR")

    def _kill(self, job: Job) -> None:
        proc = job.head.proc if job.instances else None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while any(j.ended_at is None for j in self.jobs.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("emulated jobs still running")
            time.sleep(0.2)

    # ---------------------------------------------------------------- LIST, GET, presigned URLs
    def _presigned(self, match, sql, params, ctx):
        """``GET_PRESIGNED_URL(@stage, 'path', lifetime)`` (one file, as the payload asks) or
        over a VALUES list of names (as SFStageFileSystem asks): URLs this server answers with
        the file's bytes; NULL for a file that does not exist."""
        m = re.search(
            r"get_presigned_url\s*\(\s*(?:'([^']+)'|(@[^,\s]+))\s*,\s*(\?|'(?:[^']|'')*'|\w+)",
            sql,
            re.I,
        )
        if m is None:
            raise SnowflakeError(1003, "SQL compilation error: GET_PRESIGNED_URL arguments")
        stage = m.group(1) or m.group(2)
        arg = m.group(3)
        if arg == "?":
            names = [str(params[0])]
        elif arg.startswith("'"):
            names = parse_literals(arg)
        else:
            values = re.search(r"\bVALUES\b", sql, re.I)
            names = parse_literals(sql[values.end() :]) if values else []
        db, schema, name, *_ = _stage_parts(stage, ctx.conn)
        if not self._stage_known(ctx, db, schema, name):
            raise _not_found("Stage", f"{db}.{schema}.{name}")
        rows = []
        for file in names:
            rel = file.lstrip("/")
            target = _bucket_dir(db, schema, name) / rel
            url = f"http://127.0.0.1:{self.port}/presigned/{db}/{schema}/{name}/{rel}"
            rows.append([file, url if target.is_file() else None])
        if arg == "?" or arg.startswith("'"):
            return ["GET_PRESIGNED_URL"], [[rows[0][1]]]
        return ["NAME", "URL"], rows

    def _refresh_stage(self, match, sql, params, ctx):
        grammar.check(_inline(sql, params))
        return ["file", "status", "description"], []

    def _directory(self, match, sql, params, ctx):
        """``SELECT RELATIVE_PATH, SIZE, LAST_MODIFIED, MD5 FROM DIRECTORY(@stage) WHERE
        RELATIVE_PATH LIKE p [AND ... LAST_MODIFIED ... > t] ORDER BY RELATIVE_PATH``: the stage's
        directory table (always fresh here)."""
        import datetime as dt
        import hashlib

        text = _inline(sql, params)
        stage = re.search(r"DIRECTORY\s*\(\s*(@[^)\s]+)\s*\)", text, re.I).group(1)
        like = re.search(r"RELATIVE_PATH\s+LIKE\s+('(?:[^']|'')*')", text, re.I)
        since = re.search(r"LAST_MODIFIED.*?>\s*('(?:[^']|'')*')", text, re.I | re.S)
        pattern = parse_literals(like.group(1))[0] if like else "%"
        after = None
        if since:
            after = dt.datetime.fromisoformat(parse_literals(since.group(1))[0].replace(" ", "T"))
        db, schema, name, *_ = _stage_parts(stage, ctx.conn)
        if not self._stage_known(ctx, db, schema, name):
            raise _not_found("Stage", f"{db}.{schema}.{name}")
        root = _bucket_dir(db, schema, name)
        rows = []
        for p in sorted(root.rglob("*")) if root.exists() else []:
            rel = p.relative_to(root).as_posix()
            if not p.is_file() or not _like(rel, pattern):
                continue
            modified = dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC).replace(tzinfo=None)
            if after is not None and modified <= after:
                continue
            md5 = hashlib.md5(p.read_bytes()).hexdigest()
            stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(p.stat().st_mtime))
            rows.append([rel, p.stat().st_size, stamp, md5])
        return ["RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "MD5"], rows

    def _list_path(self, match, sql, params, ctx):
        """``LIST @stage/path/``: the files under a path (fakesnow lists whole stages only)."""
        m = re.match(r"(?:LIST|LS)\s+'?(@[^'\s]+)'?", sql, re.I)
        db, schema, stage, *rest = _stage_parts(m.group(1), ctx.conn)
        if not self._stage_known(ctx, db, schema, stage):
            raise _not_found("Stage", f"{db}.{schema}.{stage}")
        root = _bucket_dir(db, schema, stage)
        prefix = "/".join(rest)
        rows = []
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel.startswith(prefix):
                st = p.stat()
                modified = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(st.st_mtime))
                rows.append([f"{stage.lower()}/{rel}", st.st_size, "", modified])
        return ["name", "size", "md5", "last_modified"], rows

    def _get(self, match, sql, params, ctx):
        m = re.match(r"GET\s+('([^']+)'|(\S+))\s+('([^']+)'|(\S+))", sql, re.I)
        if not m:
            raise SnowflakeError(1003, "SQL compilation error: syntax error in GET")
        source = m.group(2) or m.group(3)
        target = m.group(5) or m.group(6)
        db, schema, stage, *rest = _stage_parts(source, ctx.conn)
        root = _bucket_dir(db, schema, stage)
        if not self._stage_known(ctx, db, schema, stage):
            raise _not_found("Stage", f"{db}.{schema}.{stage}")
        prefix = "/".join(rest)
        base = root / prefix
        if base.is_file():
            files = [prefix]
        else:
            files = sorted(
                p.relative_to(root).as_posix()
                for p in root.rglob("*")
                if p.is_file() and p.relative_to(root).as_posix().startswith(prefix)
            )
        local = target[len("file://") :] if target.startswith("file://") else target
        return {
            "command": "DOWNLOAD",
            "src_locations": files,
            "localLocation": local,
            "parallel": 4,
            "encryptionMaterial": [],
            "stageInfo": {"locationType": "LOCAL_FS", "location": str(root), "creds": {}},
        }


@dataclass
class _Ctx:
    token: str
    conn: object
    role: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strip_comments(sql: str) -> str:
    lines = [line for line in sql.strip().splitlines() if not line.strip().startswith("--")]
    return "\n".join(lines).strip()


def _unquote_put_target(sql: str) -> str:
    """``PUT 'file://x' '@stage/p'`` → ``PUT 'file://x' @stage/p`` (fakesnow reads the target as a
    bare name only; Snowflake accepts both, and Snowpark quotes it)."""
    m = re.match(r"(\s*PUT\s+('[^']*'|\S+)\s+)'(@[^']*)'", sql, re.I | re.S)
    if not m:
        return sql
    return m.group(1) + m.group(3) + sql[m.end() :]


def _bindings(bindings: dict | None) -> list:
    if not bindings:
        return []
    from fakesnow.converter import from_binding

    if all(k.isdigit() for k in bindings):
        return [from_binding(bindings[str(i)]) for i in range(1, len(bindings) + 1)]
    return list(from_binding(b) for b in bindings.values())


def _inline(sql: str, params: list) -> str:
    """``sql`` with ``?`` markers replaced by literals (to check the statement's text)."""
    if not params:
        return sql
    values = iter(params)

    def literal(_m):
        v = next(values)
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if isinstance(v, (int, float)):
            return str(v)
        return "'" + str(v).replace("'", "''") + "'"

    return re.sub(r"\?", literal, sql)


def _qualify(parts: list[str], conn) -> tuple[str, str, str]:
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return norm_ident(conn.database or ""), parts[0], parts[1]
    return norm_ident(conn.database or ""), norm_ident(conn.schema or ""), parts[0]


def _stage_parts(location: str, conn) -> list[str]:
    """``@DB.SCH.STAGE/a/b`` → ``[DB, SCH, STAGE, a, b]``."""
    location = location.strip().lstrip("@")
    name, _, path = location.partition("/")
    db, schema, stage = _qualify(split_name(name), conn)
    return [db, schema, stage, *[p for p in path.split("/") if p]]


def _bucket_dir(db: str, schema: str, stage: str) -> Path:
    from fakesnow.transforms import stage as fs_stage

    return Path(fs_stage.LOCAL_BUCKET_PATH) / db / schema / stage


def _like(name: str, pattern: str, case: bool = False) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, 0 if case else re.I) is not None


def _column(name: str, values: list) -> dict:
    numeric = (
        values
        and all(isinstance(v, int) and not isinstance(v, bool) for v in values if v is not None)
        and any(v is not None for v in values)
    )
    return {
        "name": name,
        "database": "",
        "schema": "",
        "table": "",
        "nullable": True,
        "type": "fixed" if numeric else "text",
        "byteLength": None if numeric else 16777216,
        "length": None if numeric else 16777216,
        "scale": 0 if numeric else None,
        "precision": 38 if numeric else None,
        "collation": None,
    }


def _result(columns: list[str], rows: list[list], conn) -> dict:
    rowtype = [_column(c, [r[i] for r in rows]) for i, c in enumerate(columns)]
    rowset = [
        [None if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in r]
        for r in rows
    ]
    return {
        "data": {
            "parameters": [{"name": "TIMEZONE", "value": "Etc/UTC"}],
            "rowtype": rowtype,
            "rowset": rowset,
            "total": len(rowset),
            "returned": len(rowset),
            "queryId": str(uuid.uuid4()),
            "queryResultFormat": "json",
            "statementTypeId": 4096,
            "finalDatabaseName": getattr(conn, "database", None),
            "finalSchemaName": getattr(conn, "schema", None),
        },
        "success": True,
    }


def _error(e: SnowflakeError) -> dict:
    code = f"{e.code:06d}"
    return {
        "data": {"errorCode": code, "sqlState": e.sqlstate},
        "code": code,
        "message": e.message,
        "success": False,
    }


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
