"""Definitions for the active profile: assets, checks, job, sensors, schedule, resources."""

import dagster as dg

from .assets.checks import transcript_checks
from .assets.compute_pool import transcription_compute_pool
from .assets.ingest import librispeech_audio
from .assets.transcripts import transcripts
from .profiles import resources_for, sensor_interval_s
from .run_health import build_fail_dead_runs_sensor
from .sensors import (
    build_new_stage_files_sensor,
    build_stop_orphaned_jobs_sensor,
    transcribe_new_files,
    transcribe_new_files_schedule,
)

ASSETS = [librispeech_audio, transcription_compute_pool, transcripts, transcript_checks]


def build_definitions(resources: dict | None = None, sensor_interval: int | None = None):
    interval = sensor_interval or sensor_interval_s()
    return dg.Definitions(
        assets=ASSETS,
        jobs=[transcribe_new_files],
        sensors=[
            build_new_stage_files_sensor(interval),
            build_stop_orphaned_jobs_sensor(interval),
            build_fail_dead_runs_sensor(interval),
        ],
        schedules=[transcribe_new_files_schedule],
        resources=resources or resources_for(),
    )


defs = build_definitions()
