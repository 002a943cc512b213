"""Partitions: LibriSpeech subsets (static) and transcript batches (dynamic)."""

import dagster as dg

from .librispeech import CATALOGUE

librispeech_subsets = dg.StaticPartitionsDefinition(list(CATALOGUE))

transcript_batches = dg.DynamicPartitionsDefinition(name="transcript_batches")


def librispeech_batch_key(subset: str) -> str:
    return f"librispeech-{subset}"
