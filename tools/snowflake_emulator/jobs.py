"""ML Jobs: SYSTEM$EXECUTE_ML_JOB, services, instances, logs and cancel, run as containers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import grammar
from .wire import (
    EVENT_RECORD_CHARS,
    LOG_CAP_BYTES,
    RUNTIME_IMAGE,
    STAGE_MOUNT,
    SnowflakeError,
    _bucket_dir,
    _inline,
    _like,
    _not_found,
    _qualify,
    _stage_parts,
    parse_literals,
    split_name,
)

log = logging.getLogger(__name__)


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
    created_on: float = field(default_factory=time.time)  # wall clock, as SHOW reports it
    updated_on: float | None = None  # wall clock of the last state change
    dropped: bool = False  # DROP SERVICE: gone from DESCRIBE/SHOW, kept here for the tests
    cancelled: threading.Event = field(default_factory=threading.Event)  # ends PENDING at once

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


class JobsMixin:
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
        # PYTHONPATH too: the container's packages are the test process's (a checkout's own
        # code, not another one installed in the same virtualenv)
        keep = ("PATH", "LANG", "TMPDIR", "PYTHONPATH")
        env = {k: os.environ[k] for k in keep if k in os.environ}
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
        pool = self.pools.get(job.pool)
        if self.gpu_name and pool is not None and pool.instance_family.upper().startswith("GPU"):
            # a GPU node's driver, as far as `nvidia-smi` tells it (torch here is a CPU build)
            bin_dir = job.workdir / "bin"
            bin_dir.mkdir(exist_ok=True)
            smi = bin_dir / "nvidia-smi"
            smi.write_text(
                "#!/bin/sh\n"
                f'case "$1" in --query-gpu=*) echo "{self.gpu_name}"; exit 0;; esac\n'
                f'echo "| NVIDIA-SMI 550.54.15  Driver Version: 550.54.15  CUDA Version: 12.4 |"\n'
            )
            smi.chmod(0o755)
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        # the package index as the external access integration lets the container reach it
        env["PIP_INDEX_URL"] = f"http://127.0.0.1:{self.port}/pypi/simple"
        for key, value in job.env.items():
            env[key] = str(value).replace(STAGE_MOUNT, str(job.mount))
        return env | self.extra_env

    def _run(self, job: Job) -> None:
        try:
            job.cancelled.wait(self.pending_s)  # waiting for nodes; a cancel ends it
            with self._lock:
                if job.cancel_requested:
                    job.status, job.ended_at = "CANCELLED", time.monotonic()
                    job.updated_on = time.time()
                    return
                job.status = "RUNNING"
                job.updated_on = time.time()
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
                job.updated_on = time.time()
        except Exception as exc:  # the emulator itself failed: say so in the job
            log.exception("emulated job %s", job.id)
            with open(job.head.log_path, "a") as f:
                f.write(f"emulator error: {exc!r}\n")
            job.status, job.ended_at = "INTERNAL_ERROR", time.monotonic()
            job.updated_on = time.time()

    def fail_on_instance(self, job_id: str, index: int, message: str) -> None:
        """Make ``job_id`` end FAILED with ``message`` in instance ``index``'s log (a worker
        container that died: OOM, a GPU error), killing the head as SPCS would."""
        job = self.jobs[job_id]
        job.failure = (index, message)
        self._kill(job)

    def _job(self, ref: str, ctx) -> Job:
        db, schema, name = _qualify(split_name(ref), ctx.conn)
        job = self.jobs.get(f"{db}.{schema}.{name}")
        if job is None or job.dropped:
            raise _not_found("Service", f"{db}.{schema}.{name}")
        return job

    def _show_job_services(self, match, sql, params, ctx):
        """``SHOW JOB SERVICES [LIKE 'p'] [IN SCHEMA s]``: this account's jobs, newest last."""
        import datetime as dt

        text = _inline(sql, params)
        grammar.check(text)
        like = re.search(r"LIKE\s+('(?:[^']|'')*')", text, re.I)
        pattern = parse_literals(like.group(1))[0] if like else "%"
        scope = re.search(r"\bIN\s+(?:SCHEMA\s+)?(\S+)\s*;?\s*$", text, re.I)
        db = schema = None
        if scope:
            parts = split_name(scope.group(1).rstrip(";"))
            db, schema = (parts + [None])[:2] if len(parts) == 2 else (None, parts[0])

        def stamp(t):
            return dt.datetime.fromtimestamp(t, dt.UTC).isoformat() if t else None

        columns = ["name", "status", "database_name", "schema_name", "owner", "compute_pool",
                   "target_instances", "created_on", "updated_on"]  # fmt: skip
        rows = []
        with self._lock:
            jobs = [j for j in self.jobs.values() if not j.dropped]
        for job in jobs:
            if not _like(job.name, pattern):
                continue
            if (db and job.database != db) or (schema and job.schema != schema):
                continue
            rows.append([job.name, job.status, job.database, job.schema, "SYSADMIN", job.pool,
                         job.target_instances, stamp(job.created_on),
                         stamp(job.updated_on or job.created_on)])  # fmt: skip
        return columns, rows

    def _drop_service(self, match, sql, params, ctx):
        """``DROP SERVICE [IF EXISTS] IDENTIFIER(?)`` (the SDK's ``delete_job``) or a name."""
        ref = params[0] if params else sql[match.end() :].strip().rstrip(";")
        try:
            job = self._job(str(ref), ctx)
        except SnowflakeError:
            if match.group(1):
                return ["status"], [["Statement executed successfully."]]
            raise
        self._kill(job)
        with self._lock:
            job.dropped = True
        return ["status"], [[f"{job.name} successfully dropped."]]

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
        job.cancelled.set()
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
