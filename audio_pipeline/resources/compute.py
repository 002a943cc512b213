"""Compute for transcription: ensures the pool exists and runs the payload on it through Pipes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg
from dagster_ray.core.pipes import PipesRayJobClient
from pydantic import Field

from .. import identifiers, snowflake_sql
from .snowflake_connection import SnowflakeConnection

PAYLOAD_MODULE = "audio_pipeline.transcription"


class ComputePoolError(RuntimeError):
    pass


class TranscriptionCompute(dg.ConfigurableResource, ABC):
    """A pool of machines that runs the transcription payload."""

    home: str = Field(description="local working directory (model cache, pool state)")
    default_model: str = "bundled:tiny.en"
    default_engine: str = "transformers"

    @abstractmethod
    def ensure_pool(self, log=None) -> dict:
        """Create or resume the pool; returns metadata (address, nodes, CPUs, GPUs...)."""

    @abstractmethod
    def run_payload(
        self, context: dg.AssetExecutionContext, extras: dict
    ) -> dg.PipesClientCompletedInvocation:
        """Submit the payload with ``extras`` and wait; raises ``dg.Failure`` with the log tail."""


def _http_json(url: str, timeout: float = 2.0) -> dict | None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - http(s) only
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_port_range(size: int, avoid: set[int]) -> int:
    """The first port of ``size`` consecutive ports that are free right now."""
    for _ in range(50):
        low = random.randrange(20_000, 40_000)
        if any(low <= p < low + size for p in avoid):
            continue
        try:
            for port in (low, low + size // 2, low + size - 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return low
        except OSError:
            continue
    raise ComputePoolError("no free range of worker ports found")


ISOLATED_PORT_FLAGS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
)


def _isolated_port_flags(taken: set[int], workers: int = 200) -> list[str]:
    """``ray start`` flags giving every Ray service its own free port, all distinct."""
    low = _free_port_range(workers, taken)
    reserved = set(taken) | set(range(low, low + workers))
    flags = [f"--min-worker-port={low}", f"--max-worker-port={low + workers - 1}"]
    for flag in ISOLATED_PORT_FLAGS:
        port = _free_port()
        while port in reserved:
            port = _free_port()
        reserved.add(port)
        flags.append(f"--{flag}={port}")
    return flags


def log_tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class LocalRayCompute(TranscriptionCompute):
    """A Ray cluster on this machine, started with ``ray start --head`` on loopback when needed.

    ``address`` may name an existing cluster's dashboard (``http://host:8265``; env
    ``RAY_ADDRESS``), in which case nothing is started.
    """

    # faster-whisper with packed windows: about twice the transformers engine's speed here, at
    # the same or better WER (make bench; README "Throughput").
    default_engine: str = "ctranslate2"
    address: str | None = None
    gcs_port: int = 6379
    dashboard_port: int = 8265
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory_mb: int = 2048
    python: str | None = None
    isolated_ports: bool = Field(
        default=False,
        description="pick free ports for every Ray service, so that this head "
        "can run beside another cluster on the same machine (tests)",
    )
    start_timeout_s: float = 90.0
    poll_interval_s: float = 0.5

    @property
    def dashboard_url(self) -> str:
        if self.address:
            return self.address if "://" in self.address else f"http://{self.address}"
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def state_dir(self) -> Path:
        return Path(self.home).expanduser() / "ray"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"head-{self.dashboard_port}.pid"

    def is_up(self) -> bool:
        return _http_json(f"{self.dashboard_url}/api/version") is not None

    def ensure_pool(self, log=None) -> dict:
        started = False
        if not self.is_up():
            if self.address:
                raise ComputePoolError(f"no Ray cluster answers at {self.dashboard_url}")
            self._start_head(log)
            started = True
        info = self.cluster_info()
        info["started_now"] = started
        return info

    def _start_head(self, log=None) -> None:
        ray_bin = Path(sys.executable).with_name("ray")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(ray_bin) if ray_bin.exists() else "ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--object-store-memory={self.object_store_memory_mb * 1024 * 1024}",
        ]
        if self.isolated_ports:
            cmd += _isolated_port_flags({self.gcs_port, self.dashboard_port})
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        if self.num_gpus is not None:
            cmd.append(f"--num-gpus={self.num_gpus}")
        env = os.environ | {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            # A single-machine cluster: bind and advertise loopback, not the host's address
            # (Ray otherwise replaces 127.0.0.1 by the host IP, for other nodes' sake).
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }
        env.pop("RAY_ADDRESS", None)
        log_path = self.state_dir / f"head-{self.dashboard_port}.log"
        if log:
            log.info(
                f"starting a Ray head on 127.0.0.1:{self.gcs_port} "
                f"(dashboard {self.dashboard_url}); log {log_path}"
            )
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ComputePoolError(
                    f"ray start exited with {proc.returncode}:\n{log_tail(log_path.read_text())}"
                )
            if self.is_up() and self._nodes():
                return
            time.sleep(0.5)
        self.stop()
        raise ComputePoolError(
            f"Ray head did not answer within {self.start_timeout_s:.0f} s:\n"
            f"{log_tail(log_path.read_text())}"
        )

    def _nodes(self) -> list[dict]:
        data = _http_json(f"{self.dashboard_url}/api/v0/nodes?limit=1000", timeout=10)
        if not data or not data.get("result"):
            return []
        return [n for n in data["data"]["result"]["result"] if n.get("state") == "ALIVE"]

    def cluster_info(self) -> dict:
        nodes = self._nodes()
        return {
            "address": self.dashboard_url,
            "nodes": len(nodes),
            "cpus": sum(n["resources_total"].get("CPU", 0) for n in nodes),
            "gpus": sum(n["resources_total"].get("GPU", 0) for n in nodes),
        }

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the head this project started (by its recorded PID); True when one was stopped."""
        if not self.pid_file.exists():
            return False
        pid = int(self.pid_file.read_text().strip() or 0)
        self.pid_file.unlink(missing_ok=True)
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True

    def _client(self):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        return PatientRayJobClient(
            address=self.dashboard_url,
            poll_interval=self.poll_interval_s,
            submit_timeout_s=self.start_timeout_s,
        )

    def run_payload(self, context, extras):
        from ray.job_submission import JobSubmissionClient

        python = self.python or (sys.executable if not self.address else "python")
        submission_id = f"transcripts-{context.run_id[:8]}-{uuid.uuid4().hex[:6]}"
        params = {
            "entrypoint": f"{python} -m {PAYLOAD_MODULE}",
            "submission_id": submission_id,
            "runtime_env": {
                "env_vars": {
                    "PYTHONUNBUFFERED": "1",
                    "TOKENIZERS_PARALLELISM": "false",
                    "RAY_AUTH_MODE": "disabled",
                }
            },
        }
        context.log.info(f"submitting Ray job {submission_id} to {self.dashboard_url}")
        try:
            return self._client().run(context=context, submit_job_params=params, extras=extras)
        except RuntimeError as exc:
            try:
                logs = JobSubmissionClient(self.dashboard_url).get_job_logs(submission_id)
            except Exception as log_exc:  # the cluster itself may be gone
                logs = f"(job logs unavailable: {log_exc})"
            tail = log_tail(logs)
            raise dg.Failure(
                description=f"Ray job {submission_id} failed: {exc}\n--- log tail ---\n{tail}",
                metadata={
                    "ray_job_id": submission_id,
                    "log_tail": dg.MetadataValue.text(tail),
                    "dashboard": dg.MetadataValue.url(self.dashboard_url),
                },
            ) from exc


class PatientRayJobClient(PipesRayJobClient):
    """dagster-ray's client, retrying submission while a fresh head has no job agent yet."""

    def __init__(self, *args, submit_timeout_s: float = 90.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._submit_timeout_s = submit_timeout_s

    def _start(self, context, session, submit_job_params):
        deadline = time.monotonic() + self._submit_timeout_s
        while True:
            try:
                return super()._start(context, session, dict(submit_job_params))
            except RuntimeError as exc:
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                context.log.info("Ray job agent not ready yet; retrying submission")
                time.sleep(2)


PAYLOAD_ENTRY = "run_payload.py"
SNOWFLAKE_PAYLOAD_MODULE = "audio_pipeline.transcription.snowflake_job"
INGEST_PAYLOAD_MODULE = "audio_pipeline.transcription.ingest_job"
# Credits per node-hour (Snowflake service consumption table); used for the cost estimate.
CREDITS_PER_NODE_HOUR = {"GPU_NV_S": 0.57}
# What the payload bundle carries: the dagster-free modules and the SQL files.
_BUNDLE_FILES = (
    "audio_pipeline/__init__.py",
    "audio_pipeline/identifiers.py",
    "audio_pipeline/librispeech.py",
    "audio_pipeline/models.py",
    "audio_pipeline/snowflake_sql.py",
    "audio_pipeline/sql.py",
)
_ENTRY_SCRIPT = '''"""ML Job entry point: run the module named in argv[1] from this directory."""
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
'''


def build_payload_dir(dest: Path) -> Path:
    """Copy the payload (``transcription/``, the modules it imports, ``sql/``) under ``dest``."""
    src_root = Path(__file__).resolve().parents[2]
    for rel in _BUNDLE_FILES:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / rel, target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(
        src_root / "audio_pipeline" / "transcription",
        dest / "audio_pipeline" / "transcription",
        ignore=ignore,
        dirs_exist_ok=True,
    )
    shutil.copytree(src_root / "sql", dest / "sql", ignore=ignore, dirs_exist_ok=True)
    (dest / PAYLOAD_ENTRY).write_text(_ENTRY_SCRIPT)
    return dest


class SnowflakeMLJobCompute(TranscriptionCompute):
    """A Snowflake compute pool; the payload runs there as an ML Job, followed through Pipes.

    ``home`` is the working directory inside the job's container (model cache).
    """

    connection: SnowflakeConnection
    home: str = "/tmp/audio_pipeline"
    default_model: str = "openai/whisper-large-v3"
    pool_name: str = "AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES"
    instance_family: str = "GPU_NV_S"
    min_nodes: int = Field(default=1, ge=1)
    max_nodes: int = Field(default=5, ge=1)
    auto_suspend_secs: int = Field(default=300, ge=0)
    auto_resume: bool = True
    initially_suspended: bool = True
    target_instances: int = Field(default=5, ge=1, description="nodes per transcription job")
    min_instances: int = Field(default=1, ge=1, description="nodes a job waits for to start")
    job_stage: str = "JOB_STAGE"
    external_access_integrations: list[str] = Field(
        default_factory=lambda: ["AUDIO_PIPELINE_ACCESS_INTEGRATION"]
    )
    pip_requirements: list[str] = Field(
        default_factory=lambda: ["dagster-pipes==1.13.27", "soundfile>=0.12", "librosa>=0.10"]
    )
    runtime_environment: str | None = None
    poll_interval_s: float = 10.0
    timeout_s: float | None = Field(default=3 * 3600.0, description="cancel the job after this")
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
        """CREATE IF NOT EXISTS, ALTER when DESCRIBE differs from the config; DESCRIBE metadata."""
        if self.min_nodes > self.max_nodes:
            raise ComputePoolError(f"min_nodes {self.min_nodes} > max_nodes {self.max_nodes}")
        stmts = self.pool_sql()
        cursor.execute(*stmts["create"])
        info = _describe(cursor, stmts["describe"][0])
        wanted = stmts["alter"][1]
        differs = sorted(k for k, v in wanted.items() if not _same(info.get(k), v))
        if differs:
            if log:
                log.info(f"compute pool {self.pool_name}: updating {', '.join(differs)}")
            cursor.execute(*stmts["alter"])
            info = _describe(cursor, stmts["describe"][0])
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
            "altered": ", ".join(differs) or "nothing",
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
            "stage_name": identifiers.validate(self.job_stage, "stage name"),
            "target_instances": 1 if ingest else self.target_instances,
            "min_instances": 1 if ingest else min(self.min_instances, self.target_instances),
            "pip_requirements": list(self.pip_requirements),
            "external_access_integrations": [
                identifiers.validate(e, "integration name")
                for e in self.external_access_integrations
            ],
            "env_vars": self.job_env(),
            "query_warehouse": identifiers.validate(self.connection.warehouse, "warehouse name"),
            "name": ("INGEST_" if ingest else "TRANSCRIPTS_")
            + run_id.replace("-", "")[:12].upper(),
            "database": database,
            "schema": schema,
        }
        if self.runtime_environment:
            kwargs["runtime_environment"] = self.runtime_environment
        return kwargs

    def _client(self):
        from .pipes_snowflake import PipesSnowflakeMLJobClient

        return PipesSnowflakeMLJobClient(
            poll_interval_s=self.poll_interval_s, timeout_s=self.timeout_s
        )

    def _run(self, context, extras: dict, module: str, ingest: bool):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="audio-payload-") as tmp:
            bundle = build_payload_dir(Path(tmp) / "payload")
            with self.connection.snowpark_session() as session:
                return self._client().run(
                    context=context,
                    dir_path=str(bundle),
                    session=session,
                    extras=extras,
                    **self.submit_args(module, context.run.run_id, ingest=ingest),
                )

    def run_payload(self, context, extras):
        return self._run(context, extras, SNOWFLAKE_PAYLOAD_MODULE, ingest=False)

    def run_ingest(self, context, extras):
        """Download a LibriSpeech subset and PUT it to the stage as an ML Job on the CPU pool."""
        return self._run(context, extras, INGEST_PAYLOAD_MODULE, ingest=True)


def _describe(cursor, statement: str) -> dict:
    cursor.execute(statement)
    rows = cursor.fetchall()
    if not rows:
        return {}
    names = [str(d[0]).lower() for d in cursor.description]
    return dict(zip(names, rows[0], strict=False))


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _same(current, wanted) -> bool:
    if isinstance(wanted, bool):
        return str(current).strip().lower() == str(wanted).lower()
    return _int(current) == wanted
