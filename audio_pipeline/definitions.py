"""Definitions for the active profile: assets, resources."""

import dagster as dg

from .assets.compute_pool import transcription_compute_pool
from .assets.ingest import librispeech_audio
from .assets.transcripts import transcripts
from .profiles import resources_for

ASSETS = [librispeech_audio, transcription_compute_pool, transcripts]


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    return dg.Definitions(assets=ASSETS, resources=resources or resources_for())


defs = build_definitions()
