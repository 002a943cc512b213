"""Transcripts of a batch of stage files, produced by a remote job through Dagster Pipes."""

import dagster as dg
from pydantic import Field

from ..partitions import transcript_batches
from ..resources.compute import TranscriptionCompute
from ..resources.stage import AudioStage
from ..resources.warehouse import TranscriptStore
from ..transcription.engine import DecodingOptions
from ..transcription.entry import markdown_preview
from ..transcription.models import model_id_for
from ..transcription.quality import BatchReport, percent
from ..transcription.settings import MIB, JobSettings, default
from .compute_pool import transcription_compute_pool
from .ingest import librispeech_audio

_DECODING = DecodingOptions()


# Runs of transcripts on one cluster share this Dagster concurrency pool: the instance's
# `concurrency: pools: default_limit` (1 in the dagster.yaml that `make dev`/`make demo` write).
TRANSCRIPTION_POOL = "transcription"


class TranscriptsConfig(dg.Config):
    """The asset's run config; every default comes from the payload's settings dataclasses."""

    model: str | None = Field(
        default=None,
        description="bundled:tiny.en, a local directory or a Hugging Face id "
        "(id@revision pins it); default: the profile's model",
    )
    engine: str | None = Field(default=None, description="transformers | ctranslate2")
    force: bool = Field(
        default=default(JobSettings, "force"), description="re-transcribe files that have an ok row"
    )
    retry_errors: bool = Field(
        default=default(JobSettings, "retry_errors"),
        description="re-transcribe files with error rows",
    )
    batch_size: int = Field(default=_DECODING.batch_size, ge=1, le=256)
    num_beams: int = Field(default=_DECODING.num_beams, ge=1, le=16)
    language: str | None = _DECODING.language
    return_timestamps: bool = _DECODING.return_timestamps
    pack: bool = Field(
        default=_DECODING.pack,
        description="ctranslate2 engine: pack short clips into shared 30 s windows (falls back "
        "to one clip per window wherever the split is ambiguous)",
    )
    actors: int | None = Field(default=default(JobSettings, "actors"), ge=1)
    threads_per_actor: int | None = Field(default=default(JobSettings, "threads_per_actor"), ge=1)
    calls_per_actor: int | None = Field(
        default=default(JobSettings, "calls_per_actor"),
        ge=1,
        description="batches one actor transcribes at once, its threads shared between them "
        "(ctranslate2 only); default: one per thread on CPU, one on GPU",
    )
    max_file_mb: int = Field(default=default(JobSettings, "max_file_bytes") // MIB, ge=1)
    stall_timeout_s: float | None = Field(
        default=default(JobSettings, "stall_timeout_s"),
        gt=0,
        description="fail (and stop) the job when no row has come back for this long; "
        "None: wait forever",
    )

    def decoding(self) -> DecodingOptions:
        return DecodingOptions(
            language=self.language,
            num_beams=self.num_beams,
            batch_size=self.batch_size,
            return_timestamps=self.return_timestamps,
            pack=self.pack,
        )


TRANSCRIPTS = dg.AssetKey("transcripts")


@dg.asset(
    key=TRANSCRIPTS,
    description="One row per (file, model) for the batch's audio files: text, segments, status.",
    deps=[
        dg.AssetDep(librispeech_audio, partition_mapping=dg.AllPartitionMapping()),
        # The job runs on the pool this asset provisions: it is materialized (ensured) first.
        transcription_compute_pool,
    ],
    group_name="transcription",
    kinds={"ray", "whisper"},
    partitions_def=transcript_batches,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=TRANSCRIPTION_POOL,
)
def transcripts(
    context: dg.AssetExecutionContext,
    config: TranscriptsConfig,
    stage: AudioStage,
    store: TranscriptStore,
    compute: TranscriptionCompute,
):
    """One row per (file, model) for the batch's audio files: text, segments, status."""
    batch_keys = list(context.partition_keys)
    model = config.model or compute.default_model
    engine = config.engine or compute.default_engine
    model_id = model_id_for(model)
    store.ensure_tables()
    pending = store.pending_files(batch_keys, model_id, config.force, config.retry_errors)
    if not pending:
        report = store.batch_report(batch_keys, model_id)
        context.log.info(
            f"nothing to transcribe: all {report.files} file(s) of "
            f"{', '.join(batch_keys)} have a transcript for {model_id}"
        )
        report_partitions(context, store, model_id, {}, None)
        return dg.MaterializeResult(metadata={"status": "cached", "model_id": model_id})
    context.log.info(f"{len(pending)} file(s) to transcribe with {model_id} ({engine})")
    # Idempotent: a pool materialized earlier may have stopped since (or auto-suspended).
    pool = compute.ensure_pool(log=context.log)
    settings = JobSettings(
        batch_keys=batch_keys,
        model=model,
        model_id=model_id,
        engine=engine,
        home=compute.home,
        source=stage.payload_spec(),
        sink=store.payload_spec(),
        decoding=config.decoding(),
        force=config.force,
        retry_errors=config.retry_errors,
        run_id=context.run_id,
        actors=config.actors,
        threads_per_actor=config.threads_per_actor,
        calls_per_actor=config.calls_per_actor,
        max_file_bytes=config.max_file_mb * MIB,
        stall_timeout_s=config.stall_timeout_s,
    )
    invocation = compute.run_payload(
        context, extras={"job": settings.to_extras(), "partition_keys": batch_keys}
    )
    result = invocation.get_materialize_result()
    job = {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}
    report_partitions(context, store, model_id, job.get("files_by_batch") or {}, job)
    metadata = {k: job[k] for k in JOB_FIGURES if k in job}
    metadata["job_files"] = job.get("files", 0)
    metadata["job_audio_minutes"] = round(job.get("audio_seconds", 0.0) / 60, 2)
    metadata["pool"] = str(pool.get("address", ""))
    metadata.update(invocation.metadata or {})
    metadata["model_id"] = model_id  # the checks read which model's rows to measure
    return dg.MaterializeResult(metadata=metadata)


# What a job reports about itself; its file counts, WER and preview are per partition instead.
JOB_FIGURES = ("wall_seconds", "x_real_time", "model_id", "engine", "nodes", "actors")
JOB_FIGURES += ("threads_per_actor", "calls_per_actor", "expected_nodes")
JOB_FIGURES += ("long_files", "pieces", "piece_nodes")  # files cut at pauses, where any were


def partition_metadata(report: BatchReport, transcribed_now: int) -> dict:
    """One partition's own figures, read back from the transcript table."""
    meta: dict = {
        "files": report.files,
        "transcribed_now": transcribed_now,
        "ok": report.ok,
        "errors": report.errors,
        "audio_minutes": round(report.audio_s / 60, 2),
        "wer_files": report.wer_files,
    }
    if report.wer is not None:
        meta["wer_percent"] = percent(report.wer)
    rows = [
        {"file_path": r["file_path"], "status": "ok", "text": r["text"]} for r in report.samples
    ]
    rows += [
        {"file_path": r["file_path"], "status": "error", "text": r["error"]}
        for r in report.error_samples
    ]
    if rows:
        meta["preview"] = dg.MetadataValue.md(markdown_preview(rows))
    return meta


def report_partitions(context, store, model_id: str, transcribed: dict, job: dict | None) -> None:
    """Each partition's materialization gets its own figures (a backfill is one run).

    ``job`` is None when nothing was transcribed: each partition then keeps the x-real-time of
    the run that last transcribed it.
    """
    for key in context.partition_keys:
        meta = partition_metadata(store.batch_report([key], model_id), transcribed.get(key, 0))
        if job is None:
            last = _last_metadata(context, key)
            if "x_real_time" in last:
                meta["x_real_time"] = last["x_real_time"]
        context.add_asset_metadata(meta, partition_key=key)


def _last_metadata(context, partition_key: str) -> dict:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition_key]),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return {}
    return dict(records[0].asset_materialization.metadata)
