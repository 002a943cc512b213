"""Where LibriSpeech subsets come from (the ``librispeech_audio`` asset's resource)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from ..transcription import librispeech


class LibriSpeechSource(dg.ConfigurableResource):
    """Where LibriSpeech comes from: a base URL or a local mirror directory."""

    mirror: str = librispeech.OPENSLR_BASE_URL
    work_dir: str
    md5_override: str | None = None
    progress: bool = True
    run_as_job: bool = Field(
        default=False,
        description="download and upload on the compute's CPU pool as a remote job (Snowflake "
        "ML Job, as the quickstart does) instead of in the Dagster process",
    )
