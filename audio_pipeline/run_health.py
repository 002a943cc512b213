"""Runs whose process died, found and failed; and the local instance's ``dagster.yaml``.

Dagster's ``DefaultRunLauncher`` (local runs, one process each) cannot tell run monitoring whether
a run's process lives, so a run killed by ``kill -9`` or the out-of-memory killer stays STARTED
forever. Its worker records its PID in the run's "Started process for run" event: the
``fail_dead_runs`` sensor marks a STARTED run whose PID is gone (or a zombie) failed, and the
run-failure sensor ``stop_orphaned_jobs`` (``sensors.py``) then stops its compute job.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster import DagsterEventType, DagsterInstance


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


def dead_runs(instance: DagsterInstance) -> list[tuple[dg.DagsterRun, int]]:
    """STARTED runs of this machine's launcher whose worker process is gone, with the PID."""
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []  # another launcher's workers run elsewhere: their PIDs mean nothing here
    dead = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = run_worker_pid(instance, run.run_id)
        if pid is not None and not process_alive(pid):
            dead.append((run, pid))
    return dead


def build_fail_dead_runs_sensor(minimum_interval_s: int = 30):
    """Marks failed the runs whose process died; ``minimum_interval_s`` is 30 s at most."""

    @dg.sensor(
        name="fail_dead_runs",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=max(1, min(minimum_interval_s, 30)),
        description="Marks a run failed when its process is gone (kill -9, out of memory), so "
        "that stop_orphaned_jobs stops its compute job.",
    )
    def fail_dead_runs(context: dg.SensorEvaluationContext):
        found = dead_runs(context.instance)
        for run, pid in found:
            context.instance.report_run_failed(run, f"the run worker process (PID {pid}) is gone")
        if not found:
            return dg.SkipReason("every started run's process is alive")
        context.log.info(f"failed {len(found)} dead run(s): {[r.run_id for r, _ in found]}")
        return dg.SkipReason(f"marked {len(found)} dead run(s) failed")

    return fail_dead_runs


INSTANCE_YAML = """\
# Written by audio_pipeline (make dev / make demo); edit freely, it is not overwritten.
telemetry:
  enabled: false
concurrency:
  pools:
    # Runs of `transcripts` share the pool "transcription": one at a time on the local Ray
    # cluster. Raise it here, or per pool in the UI (Deployment > Concurrency).
    default_limit: 1
"""

# What earlier versions wrote: replaced, since the run launcher they name no longer exists.
_TELEMETRY_ONLY = "telemetry:\n  enabled: false\n"
_WITH_LAUNCHER = INSTANCE_YAML.replace(
    "concurrency:",
    "run_launcher:\n  module: audio_pipeline.run_launcher\n  class: LocalRunLauncher\n"
    "run_monitoring:\n  enabled: true\n  poll_interval_seconds: 30\n"
    "  max_resume_run_attempts: 0\nconcurrency:",
)


def write_instance_yaml(dagster_home: str | os.PathLike) -> Path:
    """``dagster.yaml`` for a local instance, unless one exists."""
    path = Path(dagster_home) / "dagster.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Files this project wrote earlier (telemetry only, or naming the run launcher it had
    # then) are replaced; a file of the user's own is left alone.
    if not path.exists() or path.read_text() in (_TELEMETRY_ONLY, _WITH_LAUNCHER):
        path.write_text(INSTANCE_YAML)
    return path


if __name__ == "__main__":  # make dev: python -m audio_pipeline.run_health $DAGSTER_HOME
    import sys

    print(write_instance_yaml(sys.argv[1]))
