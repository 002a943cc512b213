"""The four checks of ``transcripts``, evaluated from the transcript table.

One code path for a materialization, a backfill (one run over its partitions) and the UI's
"Execute checks" (no partition: every batch). A check with nothing to measure (``wer`` where no
file has a reference) yields no result: Dagster records it as skipped.
"""

import dagster as dg
from pydantic import Field

from ..partitions import transcript_batches
from ..resources.compute import TranscriptionCompute
from ..resources.warehouse import TranscriptStore
from ..transcription.models import model_id_for
from ..transcription.quality import CheckThresholds, evaluate_checks
from .transcripts import TRANSCRIPTS

_CHECKS = CheckThresholds()

CHECK_DESCRIPTIONS: dict[str, str] = {
    "completeness": "Every manifest file of the partition has a transcript row for the model.",
    "error_rate": "The share of error rows is at most max_error_rate.",
    "wer": "Corpus WER against reference transcripts is at most max_wer (where references exist).",
    "hallucinations": "The share of rows flagged by the hallucination heuristics (compression "
    "ratio > 2.4, repeated n-grams, text on silent audio) is at most max_flagged_rate.",
}


class TranscriptChecksConfig(dg.Config):
    """Thresholds, and which model's rows to measure (default: the model of the partition's
    latest materialization, else the profile's model)."""

    model: str | None = None
    max_error_rate: float = Field(
        default=_CHECKS.max_error_rate, ge=0, le=1, description="error_rate check"
    )
    max_wer: float = Field(
        default=_CHECKS.max_wer,
        ge=0,
        description="wer check, where references exist; a fraction (0.25 is shown as 25 %)",
    )
    max_flagged_rate: float = Field(
        default=_CHECKS.max_flagged_rate, ge=0, le=1, description="hallucinations check"
    )

    def thresholds(self) -> CheckThresholds:
        return CheckThresholds(self.max_error_rate, self.max_wer, self.max_flagged_rate)


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=TRANSCRIPTS, description=text)
        for name, text in CHECK_DESCRIPTIONS.items()
    ],
    can_subset=True,
)
def transcript_checks(
    context: dg.AssetCheckExecutionContext,
    config: TranscriptChecksConfig,
    store: TranscriptStore,
    compute: TranscriptionCompute,
):
    if context.has_partition_key or context.has_partition_key_range:
        batch_keys = list(context.partition_keys)
    else:
        batch_keys = transcript_batches.get_partition_keys(
            dynamic_partitions_store=context.instance
        )
    model_id = model_id_for(config.model) if config.model else None
    model_id = model_id or _materialized_model_id(context, batch_keys)
    model_id = model_id or model_id_for(compute.default_model)
    store.ensure_tables()
    report = store.batch_report(batch_keys, model_id)
    selected = context.selected_asset_check_keys
    for outcome in evaluate_checks(report, config.thresholds()):
        if dg.AssetCheckKey(TRANSCRIPTS, outcome.name) in selected:
            yield dg.AssetCheckResult(
                asset_key=TRANSCRIPTS,
                check_name=outcome.name,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity(outcome.severity),
                metadata={**outcome.metadata, "model_id": model_id},
            )


def _materialized_model_id(context, batch_keys: list[str]) -> str | None:
    """The model of the latest materialization of the first of ``batch_keys``."""
    if not batch_keys:
        return None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=TRANSCRIPTS, asset_partitions=batch_keys[:1]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("model_id")
    return getattr(value, "value", value)
