"""The emulated account: its HTTP server, roles and setup DDL; the rest comes from the mixins."""

from __future__ import annotations

import gzip
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from audio_pipeline.resources.compute.ray_head import free_port

from . import fakesnow_http, grammar
from .directory import DirectoryMixin
from .faults import FaultsMixin
from .grants import GrantsMixin
from .jobs import Instance, Job, JobsMixin, startup_noise  # noqa: F401
from .pools import ComputePool, PoolsMixin  # noqa: F401
from .stages import StagesMixin
from .wire import (
    SnowflakeError,
    _bindings,
    _bucket_dir,
    _Ctx,
    _error,
    _inline,
    _not_found,
    _qualify,
    _result,
    _strip_comments,
    norm_ident,
    split_name,
)


class EmulatedAccount(DirectoryMixin, PoolsMixin, JobsMixin, StagesMixin, FaultsMixin, GrantsMixin):
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
        gpu_name: what ``nvidia-smi`` reports in a GPU pool's containers (None: no GPU).
        runtime_pythons: client Pythons (``"3.10"``) with a runtime image (None: every one).
        block_stage_reads: stages (names) whose files no reader can fetch (GET, presigned URLs),
            as when a container's egress cannot reach the stage's storage.
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
        gpu_name: str | None = "NVIDIA A10G",
        runtime_pythons: set[str] | None = None,
        block_stage_reads: set[str] | None = None,
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
        self.gpu_name = gpu_name
        self.runtime_pythons = runtime_pythons
        self.block_stage_reads: set[str] = set(block_stage_reads or ())
        self.all_statements: list[tuple[str, str]] = []  # (role, sql) of every statement
        self._grants_init()
        self.pools: dict[str, ComputePool] = {}
        self.jobs: dict[str, Job] = {}
        self.statements: list[tuple[str, str]] = []  # (role, sql) of what this module answered
        self.received: list[str] = []  # every statement, in order (costs.needs_warehouse)
        self._directory_init()
        self.ddl: list[str] = []  # setup DDL accepted (network rule, integration, grants)
        self.roles: dict[str, str] = {}  # session token -> current role
        self.default_role = "SYSADMIN"
        self.extra_env: dict[str, str] = {}
        self._lock = threading.RLock()
        self._server = None
        self._thread = None
        self.port: int | None = None
        self._init_faults()
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
            (r"CREATE\s+(OR\s+REPLACE\s+)?STREAM\s+", self._create_stream),
            (r"SELECT\s+SYSTEM\$STREAM_HAS_DATA\s*\(", self._stream_has_data),
            (r"(MERGE|INSERT)\b(?=.*METADATA\$ACTION)", self._consume_stream),
            (r"SHOW\s+TABLES\s+LIKE\s+.*\bIN\s+SCHEMA\b", self._show_tables_like),
            (r"(?=.*\bFROM\s+DIRECTORY\s*\()", self._directory),
            (r"(?=.*\bget_presigned_url\s*\()", self._presigned),
            (r"(LIST|LS)\s+'?@[^/\s']+/\S", self._list_path),
            (r"select\s+system\$cancel_all_queries\s*\(", self._cancel_queries),
            (r"SHOW\s+JOB\s+SERVICES\b", self._show_job_services),
            (r"DROP\s+SERVICE\s+(IF\s+EXISTS\s+)?", self._drop_service),
            (r"(REMOVE|RM)\s+'?@", self._remove),
            (r"SELECT\s+CURRENT_ROLE\s*\(\s*\)\s*,\s*CURRENT_USER\s*\(\s*\)", self._current),
            (r"SHOW\s+GRANTS\s+TO\s+ROLE\s+", self._show_grants_to_role),
        ]
        self._handlers = [(re.compile(p, re.I | re.S), h) for p, h in self._handlers]

    # ---------------------------------------------------------------- server
    def start(self) -> dict:
        """Start the server; returns connector keyword arguments for it."""
        import uvicorn

        self.port = free_port()
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
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        async def query(request):
            body = await request.body()
            if request.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            data = json.loads(body)
            sql = data.get("sqlText", "")
            stripped = _strip_comments(sql)
            try:
                token = fs.to_token(request)
            except fs.ServerError:
                token = None
            with self._lock:
                self.all_statements.append((self.roles.get(token, self.default_role), stripped))
            with self._lock:
                self.received.append(stripped)
            if (status := self.refused(stripped)) is not None:  # faults.py
                return Response(status_code=status)
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
            if token is not None:  # who creates an object owns it (names are never bound)
                denied = self._ownership_denied(stripped, token)
                if denied is not None:
                    return JSONResponse(_error(denied))
                self._record_owner(stripped, token)
            return await fs.query_request(fakesnow_http.unquoted_put(request, data))

        async def telemetry(_request):
            return JSONResponse({"success": True})

        async def presigned(request):
            from fakesnow.transforms import stage as fs_stage
            from starlette.responses import FileResponse, Response

            root = Path(fs_stage.LOCAL_BUCKET_PATH).resolve()
            target = (root / request.path_params["path"]).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                return Response(status_code=404)
            stage = target.relative_to(root).parts[2]
            if self._blocked(stage):
                return Response(status_code=403)
            return FileResponse(target)

        async def login(request):
            body = await request.body()
            if request.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            refused = self.login_refused(json.loads(body or b"{}"))  # faults.py
            if refused:
                return JSONResponse(
                    {"data": None, "code": "390318", "message": refused, "success": False}
                )
            return await fakesnow_http.login(request)

        async def package_index(request):
            # the package index as the integration lets a container reach it: a project page
            from starlette.responses import HTMLResponse

            name = request.path_params["name"]
            return HTMLResponse(f"<html><body><a href='{name}-1.0.tar.gz'>{name}</a></body></html>")

        # fakesnow's routes with the login answer it lacks; the query endpoint is ours (below)
        ours = {"/queries/v1/query-request", "/session/v1/login-request"}
        routes = [r for r in fakesnow_http.routes() if r.path not in ours]
        routes += [
            Route("/session/v1/login-request", login, methods=["POST"]),
            Route("/queries/v1/query-request", query, methods=["POST"]),
            Route("/telemetry/send", telemetry, methods=["POST"]),
            Route("/presigned/{path:path}", presigned, methods=["GET", "HEAD"]),
            Route("/pypi/simple/{name}/", package_index, methods=["GET"]),
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
        self._record_owner(text, ctx.token, role=ctx.role)
        self.ddl.append(text)
        return ["status"], [["Statement executed successfully."]]

    def _grant(self, match, sql, params, ctx):
        text = _inline(sql, params)
        grammar.check(text)
        self._record_grant(text, ctx)
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
