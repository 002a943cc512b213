"""Dagster's default run launcher, plus a health check of each run's worker process.

Run monitoring (``run_monitoring: enabled: true`` in ``dagster.yaml``) asks the launcher whether a
STARTED run's worker is alive; Dagster's ``DefaultRunLauncher`` cannot tell, so a run whose process
was killed (``kill -9``, out of memory) stays STARTED forever. The worker records its PID in the
run's "Started process for run" event; on this machine, a PID that is gone (or a zombie) means the
run is dead, and the monitor marks it failed. ``stop_orphaned_ray_jobs`` (``sensors.py``) then
stops its Ray job.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRun
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus


def run_worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The PID the run's worker reported in its "Started process for run" event (the last one)."""
    pid = None
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        data = event.engine_event_data if event else None
        if data and "pid" in (data.metadata or {}) and "Started process" in (event.message or ""):
            pid = int(data.metadata["pid"].value)
    return pid


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs on this machine (a zombie, dead but not reaped, is not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" not in status


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers run monitoring can check (same machine)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = run_worker_pid(self._instance, run.run_id)
        if pid is None:  # not reported yet: the start timeout covers runs that never start
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker PID reported yet")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"the run worker process (PID {pid}) is gone"
        )


INSTANCE_YAML = """\
# Written by audio_pipeline (make dev / make demo); edit freely, it is not overwritten.
telemetry:
  enabled: false
run_launcher:
  module: audio_pipeline.run_launcher
  class: LocalRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
  max_resume_run_attempts: 0
concurrency:
  pools:
    # Runs of `transcripts` share the pool "transcription": one at a time on the local Ray
    # cluster. Raise it here, or per pool in the UI (Deployment > Concurrency).
    default_limit: 1
"""


def write_instance_yaml(dagster_home: str | os.PathLike) -> Path:
    """``dagster.yaml`` for a local instance, unless one exists."""
    path = Path(dagster_home) / "dagster.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Earlier versions wrote only the telemetry lines: such a file gains the rest.
    if not path.exists() or path.read_text() == "telemetry:\n  enabled: false\n":
        path.write_text(INSTANCE_YAML)
    return path


if __name__ == "__main__":  # make dev: python -m audio_pipeline.run_launcher $DAGSTER_HOME
    import sys

    print(write_instance_yaml(sys.argv[1]))
