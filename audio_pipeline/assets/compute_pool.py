"""The compute pool that runs transcription jobs."""

import dagster as dg

from ..resources.compute import TranscriptionCompute


@dg.asset(group_name="compute", kinds={"ray"})
def transcription_compute_pool(
    context: dg.AssetExecutionContext, compute: TranscriptionCompute
) -> dg.MaterializeResult:
    """The pool transcription jobs run on, created or resumed as needed."""
    info = compute.ensure_pool(log=context.log)
    return dg.MaterializeResult(metadata={k: v for k, v in info.items() if v is not None})
