"""Partitions: LibriSpeech subsets (static) and transcript batches (dynamic)."""

import os

import dagster as dg

from .transcription.librispeech import subset_names

# The catalogue, plus the subsets a local LIBRISPEECH_MIRROR folder holds beyond it.
librispeech_subsets = dg.StaticPartitionsDefinition(
    subset_names(os.environ.get("LIBRISPEECH_MIRROR"))
)

transcript_batches = dg.DynamicPartitionsDefinition(name="transcript_batches")


def librispeech_batch_key(subset: str) -> str:
    return f"librispeech-{subset}"
