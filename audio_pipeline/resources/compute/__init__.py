"""Compute backends for transcription: a Ray cluster (local) or a Snowflake compute pool."""

from .base import (
    INGEST_PAYLOAD_MODULE,
    PAYLOAD_MODULE,
    ComputePoolError,
    TranscriptionCompute,
    log_tail,
)
from .bundle import PAYLOAD_ENTRY, build_payload_dir
from .local_ray import LocalRayCompute
from .ray_head import RayHead
from .snowflake_ml import SnowflakeMLJobCompute

__all__ = [
    "INGEST_PAYLOAD_MODULE",
    "PAYLOAD_ENTRY",
    "PAYLOAD_MODULE",
    "ComputePoolError",
    "LocalRayCompute",
    "RayHead",
    "SnowflakeMLJobCompute",
    "TranscriptionCompute",
    "build_payload_dir",
    "log_tail",
]
