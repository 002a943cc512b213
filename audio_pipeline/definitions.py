"""Definitions for the active profile: assets, job, sensor, schedule, resources."""

import dagster as dg

from .assets.compute_pool import transcription_compute_pool
from .assets.ingest import librispeech_audio
from .assets.transcripts import transcripts
from .profiles import resources_for, sensor_interval_s
from .sensors import (
    build_new_stage_files_sensor,
    build_stop_orphaned_jobs_sensor,
    transcribe_new_files,
    transcribe_new_files_schedule,
)

ASSETS = [librispeech_audio, transcription_compute_pool, transcripts]


def build_definitions(resources: dict | None = None, sensor_interval: int | None = None):
    interval = sensor_interval or sensor_interval_s()
    return dg.Definitions(
        assets=ASSETS,
        jobs=[transcribe_new_files],
        sensors=[
            build_new_stage_files_sensor(interval),
            build_stop_orphaned_jobs_sensor(interval),
        ],
        schedules=[transcribe_new_files_schedule],
        resources=resources or resources_for(),
    )


defs = build_definitions()
