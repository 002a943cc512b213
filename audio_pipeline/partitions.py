"""Partitions: LibriSpeech subsets (static) and transcript batches (dynamic)."""

import dagster as dg

from .profiles import librispeech_mirror
from .transcription.librispeech import subset_names

# The catalogue, plus the subsets a local LIBRISPEECH_MIRROR folder holds beyond it.
librispeech_subsets = dg.StaticPartitionsDefinition(subset_names(librispeech_mirror()))

transcript_batches = dg.DynamicPartitionsDefinition(name="transcript_batches")


def librispeech_batch_key(subset: str) -> str:
    return f"librispeech-{subset}"
