"""The compute backend interface: ensure the pool exists, run the payload on it through Pipes."""

from __future__ import annotations

from abc import ABC, abstractmethod

import dagster as dg
from pydantic import Field

PAYLOAD_MODULE = "audio_pipeline.transcription"
INGEST_PAYLOAD_MODULE = "audio_pipeline.transcription.ingest_job"


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

    def stop_run_jobs(self, run_id: str) -> list[str]:
        """Stop the jobs still running for a Dagster run that died; returns their ids."""
        return []


def log_tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
