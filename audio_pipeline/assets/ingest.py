"""LibriSpeech subsets → the stage, the manifest and the reference transcripts."""

from pathlib import Path

import dagster as dg
import soundfile as sf

from ..partitions import librispeech_batch_key, librispeech_subsets, transcript_batches
from ..resources.compute import TranscriptionCompute
from ..resources.librispeech_source import LibriSpeechSource
from ..resources.stage import AudioStage
from ..resources.warehouse import TranscriptStore
from ..transcription import librispeech


@dg.asset(
    partitions_def=librispeech_subsets,
    group_name="ingest",
    kinds={"python", "librispeech"},
)
def librispeech_audio(
    context: dg.AssetExecutionContext,
    librispeech_source: LibriSpeechSource,
    stage: AudioStage,
    store: TranscriptStore,
    compute: TranscriptionCompute,
) -> dg.MaterializeResult:
    """A LibriSpeech subset's FLACs in the stage, registered as one transcript batch."""
    subset = context.partition_key
    if librispeech_source.run_as_job and subset != librispeech.SAMPLE_SUBSET:
        return _ingest_as_job(context, librispeech_source, stage, store, compute)
    tree = librispeech.fetch_subset(
        subset,
        librispeech_source.mirror,
        Path(librispeech_source.work_dir),
        md5=librispeech_source.md5_override,
        progress=librispeech_source.progress,
    )
    batch_key = librispeech_batch_key(subset)
    manifest = librispeech.build_manifest(tree, batch_key)
    if not manifest.files:
        raise dg.Failure(f"{tree} holds no <speaker>/<chapter>/*.flac files")
    # Register before copying: the new-file sensor must never claim these files for a batch
    # of its own while the copy is under way. The batch becomes a partition only at the end.
    store.ensure_tables()
    store.register_files(manifest.files)
    copied = 0
    for i, utt in enumerate(manifest.utterances, 1):
        copied += stage.put_file(utt.audio, utt.relative_path)
        if i % 1000 == 0:
            context.log.info(f"staged {i}/{len(manifest.utterances)} files")
    # The staged files' modification times, in one listing: the sensor compares against them.
    staged = {f.path: f.last_modified for f in stage.list_files(subset)}
    store.register_files(
        [r | {"last_modified": staged.get(r["file_path"])} for r in manifest.files]
    )
    store.load_references(manifest.references)
    context.instance.add_dynamic_partitions(transcript_batches.name, [batch_key])
    audio_s, unreadable = audio_seconds(manifest.utterances)
    rows = manifest.files
    total_bytes = manifest.total_bytes
    references = manifest.references
    context.log.info(
        f"{len(rows)} files in batch {batch_key}: {copied} copied, "
        f"{len(rows) - copied} already in the stage"
    )
    if unreadable:
        context.log.warning(
            f"{len(unreadable)} file(s) have no readable audio header (they are staged and will "
            f"be error rows when transcribed): {', '.join(unreadable[:10])}"
        )
    return dg.MaterializeResult(
        metadata={
            "files": len(rows),
            "copied": copied,
            "skipped_existing": len(rows) - copied,
            "size": format_bytes(total_bytes),
            "audio_hours": round(audio_s / 3600, 4),
            "references": len(references),
            "unreadable_headers": len(unreadable),
            "batch_key": batch_key,
            "stage": stage.describe(),
        }
    )


def format_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB``: sizes in metadata are read by people."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def audio_seconds(utterances) -> tuple[float, list[str]]:
    """Total duration from the files' headers, and the files whose header cannot be read."""
    total, unreadable = 0.0, []
    for utt in utterances:
        try:
            total += sf.info(str(utt.audio)).duration
        except Exception:  # a corrupt file is one error row later, never a failed ingest
            unreadable.append(utt.relative_path)
    return total, unreadable


def _ingest_as_job(context, source: LibriSpeechSource, stage, store, compute):
    run_ingest = getattr(compute, "run_ingest", None)
    if run_ingest is None:
        raise dg.Failure(f"{type(compute).__name__} cannot run the ingest as a job")
    subset = context.partition_key
    batch_key = librispeech_batch_key(subset)
    invocation = run_ingest(
        context,
        {
            "ingest": {
                "subset": subset,
                "mirror": source.mirror,
                "work_dir": source.work_dir,
                "md5": source.md5_override,
                "batch_key": batch_key,
                "stage": stage.payload_spec(),
                "sink": store.payload_spec(),
            }
        },
    )
    context.instance.add_dynamic_partitions(transcript_batches.name, [batch_key])
    return invocation.get_materialize_result()
