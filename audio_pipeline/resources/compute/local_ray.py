"""Ray Jobs on a Ray cluster: the local head we start, or an existing cluster's address."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import dagster as dg
from dagster_ray import PipesRayJobClient, PipesRayJobMessageReader
from pydantic import Field

from .. import job_logs
from .base import PAYLOAD_MODULE, ComputePoolError, TranscriptionCompute
from .bundle import PAYLOAD_ENTRY, RAY_PAYLOAD_REQUIREMENTS, build_payload_dir
from .ray_head import RayHead, alive_nodes, http_json

SUBMISSION_PREFIX = "transcripts-"  # + the Dagster run id's first 8 characters


class LocalRayCompute(TranscriptionCompute):
    """A Ray cluster on this machine, started with ``ray start --head`` on loopback when needed.

    ``address`` may name an existing cluster's dashboard (``http://host:8265``; env
    ``RAY_ADDRESS``), in which case nothing is started.
    """

    # faster-whisper: about twice the transformers engine's speed here (make bench; README).
    default_engine: str = "ctranslate2"
    address: str | None = None
    gcs_port: int = 6379
    dashboard_port: int = 8265
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory_mb: int = 2048
    python: str | None = None
    isolated_ports: bool = Field(
        default=True,
        description="give Ray's internal services (agents, worker ports, client server, "
        "metrics) free ports, so that the head runs beside any other Ray cluster on the machine "
        "(on Ray's fixed defaults, a second cluster's job agent cannot start); false: Ray's "
        "defaults",
    )
    start_timeout_s: float = 90.0
    poll_interval_s: float = 0.5
    pip_requirements: list[str] | None = Field(
        default=None,
        description="pip packages the job's Ray runtime environment installs beside the shipped "
        "payload; default: none on a cluster that runs this environment's python (the head this "
        "resource starts, or one on loopback started from this environment), the payload's "
        "requirements on any other cluster given by `address`",
    )
    installer: Literal["uv", "pip"] = Field(
        default="uv",
        description="what installs `pip_requirements` on the cluster's nodes: Ray's uv runtime "
        "environment (a fresh node's first job starts in about half pip's time, and uv's download "
        "cache stays on the node for the next environment; uv reads UV_INDEX_URL, not pip.conf) "
        "or Ray's pip runtime environment (reads pip.conf)",
    )

    @property
    def dashboard_url(self) -> str:
        if self.address:
            return self.address if "://" in self.address else f"http://{self.address}"
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def head(self) -> RayHead:
        return RayHead(
            state_dir=Path(self.home).expanduser() / "ray",
            gcs_port=self.gcs_port,
            dashboard_port=self.dashboard_port,
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            object_store_memory_mb=self.object_store_memory_mb,
            isolated_ports=self.isolated_ports,
            start_timeout_s=self.start_timeout_s,
        )

    def is_up(self) -> bool:
        return http_json(f"{self.dashboard_url}/api/version") is not None

    def ensure_pool(self, log=None) -> dict:
        started = False
        if not self.is_up():
            if self.address:
                raise ComputePoolError(f"no Ray cluster answers at {self.dashboard_url}")
            self.head.start(log)
            started = True
        info = self.cluster_info()
        info["started_now"] = started
        return info

    def _nodes(self) -> list[dict]:
        return alive_nodes(self.dashboard_url)

    def cluster_info(self) -> dict:
        nodes = self._nodes()
        return {
            "address": self.dashboard_url,
            "nodes": len(nodes),
            "cpus": sum(n["resources_total"].get("CPU", 0) for n in nodes),
            "gpus": sum(n["resources_total"].get("GPU", 0) for n in nodes),
        }

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the head this project started; True when it was stopped."""
        return self.head.stop(timeout_s)

    def stop_run_jobs(self, run_id: str) -> list[str]:
        from ray.job_submission import JobStatus, JobSubmissionClient

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        client = JobSubmissionClient(self.dashboard_url)
        prefix = f"{SUBMISSION_PREFIX}{run_id[:8]}-"
        stopped = []
        for job in client.list_jobs():
            sid = job.submission_id or ""
            if sid.startswith(prefix) and job.status in (JobStatus.PENDING, JobStatus.RUNNING):
                client.stop_job(sid)
                stopped.append(sid)
        return stopped

    def _client(self):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        return PipesRayJobClient(
            address=self.dashboard_url,
            poll_interval=self.poll_interval_s,
            message_reader=QuietRayJobMessageReader(),
        )

    def runtime_env(self, bundle: Path) -> dict:
        """The job's Ray runtime environment: this checkout's payload as the working directory
        (uploaded with the job, first on every worker's import path), plus the requirements
        that ``installer`` installs, where the cluster lacks them."""
        env: dict = {
            "working_dir": str(bundle),
            "env_vars": {
                "PYTHONUNBUFFERED": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "RAY_AUTH_MODE": "disabled",
            },
        }
        if not self.address:  # our own head: its GCS, never another cluster's (see payload)
            env["env_vars"]["AUDIO_PIPELINE_RAY_GCS"] = self.head.gcs_address
        pip = self.pip_requirements
        if pip is None and self.address and not self.runs_this_python():
            pip = list(RAY_PAYLOAD_REQUIREMENTS)
        if pip and self.installer == "uv":
            # No options: Ray's default (--no-cache) would download every package again for
            # each new environment on the node.
            env["uv"] = {"packages": list(pip), "uv_pip_install_options": []}
        elif pip:
            env["pip"] = {"packages": list(pip), "pip_check": False}
        return env

    def runs_this_python(self) -> bool:
        """True when the cluster runs this environment's Python: the head this resource starts,
        or a cluster on loopback whose dashboard runs from this virtual environment. Such a
        cluster has every requirement already; a pip runtime environment would only copy the
        environment (GBs) for nothing."""
        if not self.address:
            return True
        url = urlparse(self.dashboard_url)
        if url.hostname not in ("127.0.0.1", "localhost") or not url.port:
            return False
        python = listener_python(url.port)
        return (
            python is not None and python.parent.resolve() == Path(sys.executable).parent.resolve()
        )

    def run_payload(self, context, extras):
        import tempfile

        # A cluster on this machine (ours, or RAY_ADDRESS on loopback) runs this environment.
        on_this_machine = not self.address or self.dashboard_url.split("://")[-1].startswith(
            ("127.", "localhost")
        )
        python = self.python or (sys.executable if on_this_machine else "python")
        submission_id = f"{SUBMISSION_PREFIX}{context.run.run_id[:8]}-{uuid.uuid4().hex[:6]}"
        job_url = f"{self.dashboard_url}/#/jobs/{submission_id}"
        context.log.info(f"submitting Ray job {submission_id}: {job_url}")
        with tempfile.TemporaryDirectory(prefix="audio-payload-") as tmp:
            params = {
                # Run from the shipped bundle (the job's working directory), never from
                # whatever checkout the cluster was started in.
                "entrypoint": f"{python} {PAYLOAD_ENTRY} {PAYLOAD_MODULE}",
                "submission_id": submission_id,
                "runtime_env": self.runtime_env(build_payload_dir(Path(tmp) / "payload")),
            }
            return self._run(context, params, extras, submission_id, job_url)

    def _run(self, context, params: dict, extras: dict, submission_id: str, job_url: str):
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                invocation = self._client().run(
                    context=context, submit_job_params=dict(params), extras=extras
                )
                break
            except RuntimeError as exc:
                # A fresh head answers before its job agent is up; nothing was submitted.
                if "No available agent" in str(exc) and time.monotonic() < deadline:
                    context.log.info("Ray job agent not ready yet; retrying submission")
                    time.sleep(2)
                    continue
                raise self._failure(submission_id, job_url) from exc
        invocation.metadata["Ray job"] = dg.MetadataValue.url(job_url)
        return invocation

    def _failure(self, submission_id: str, job_url: str) -> dg.Failure:
        """The payload's error and its last log lines, as a person reads them."""
        from ray.job_submission import JobSubmissionClient

        try:
            client = JobSubmissionClient(self.dashboard_url)
            status = str(client.get_job_status(submission_id).value)
            logs = client.get_job_logs(submission_id)
        except Exception as exc:  # the cluster itself may be gone
            status, logs = "did not finish", f"(job logs unavailable: {exc})"
        message = job_logs.failure_message(f"Ray job {submission_id}", status, logs)
        return dg.Failure(
            description=message,
            metadata={
                "ray_job_id": submission_id,
                "Ray job": dg.MetadataValue.url(job_url),
                "log_tail": dg.MetadataValue.text(job_logs.readable_tail(logs)),
            },
        )


def listener_python(port: int) -> Path | None:
    """The interpreter (as started: ``.venv/bin/python``) of the process on this machine that
    listens on ``port``, when it is a Python process we may inspect."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                cmdline = psutil.Process(conn.pid).cmdline()
                if cmdline and "python" in Path(cmdline[0]).name:
                    return Path(cmdline[0])
    except (psutil.Error, OSError):  # another user's process: we cannot tell
        return None
    return None


class QuietRayJobMessageReader(PipesRayJobMessageReader):
    """dagster-ray's reader with its public log-tailing step written here: Pipes messages go to
    Dagster, the job's other lines to stdout, leaving out :data:`job_logs.RAY_NOISE`.

    It stops at the payload's ``closed`` message, its last: Ray's log stream ends only seconds
    after the job does (about 4 s here, on every job), and what the driver prints after closing
    Pipes is Ray's shutdown. The client still waits for the job's end status, and a job that
    fails after closing is reported with its log tail (:meth:`LocalRayCompute._failure`)."""

    def handle_job_logs(self, handler: dg.PipesMessageHandler) -> None:
        tailer = loop = None
        try:
            while True:  # the client and job id arrive with the launch (on_launched)
                if self.session_closed.is_set():
                    return
                try:
                    client, job_id = self.client, self.job_id
                    break
                except RuntimeError:
                    time.sleep(0.1)
            self.thread_ready.set()
            loop = asyncio.new_event_loop()
            tailer = client.tail_job_logs(job_id)
            closed_at = None
            while True:
                try:
                    chunk = loop.run_until_complete(tailer.__anext__())
                except StopAsyncIteration:
                    return
                except Exception as exc:  # the stream broke: the job's end status still counts
                    print(f"Ray job log stream ended: {exc}", flush=True)
                    return
                if self._forward(chunk or "", handler):
                    return
                if self.session_closed.is_set():  # the job's last lines: 30 s at most
                    closed_at = closed_at or time.monotonic()
                    if time.monotonic() - closed_at > 30:
                        return
        finally:
            if tailer is not None and loop is not None:
                try:
                    loop.run_until_complete(tailer.aclose())  # closes the websocket
                except Exception:
                    pass
            if loop is not None:
                loop.close()
            self.thread_ready.set()
            self.completed.set()

    @staticmethod
    def _forward(chunk: str, handler: dg.PipesMessageHandler) -> bool:
        """Hand one chunk's lines on; True once the handler has had the payload's ``closed``."""
        for line in chunk.split("\n"):
            if not line or job_logs.is_noise(line):
                continue
            message = job_logs.pipes_message(line)
            if message is not None:
                handler.handle_message(message)
            else:
                print(line, flush=True)
        return handler.received_closed_message
