"""ML Job entry point: ``python -m audio_pipeline.transcription.ingest_job`` (under Pipes).

Downloads a LibriSpeech subset on a CPU pool node, as Snowflake's quickstart does, PUTs it to the
stage keeping ``<subset>/<speaker>/<chapter>/`` (one PUT per chapter, PARALLEL), and MERGEs the
manifest and reference rows. Extras (``ingest``): ``subset``, ``mirror``, ``work_dir``,
``batch_key``, ``stage`` (a ``snowflake_stage`` spec) and ``sink`` (a ``snowflake`` spec).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dagster_pipes import open_dagster_pipes

from . import identifiers, librispeech
from .pipes_stage import payload_message_writer
from .sinks import AUDIO_FILE_COLUMNS, REFERENCE_COLUMNS, SnowflakeSink
from .snowflake_auth import payload_connection


def put_chapter_command(chapter: Path, stage: dict, stage_dir: str, parallel: int = 16) -> str:
    """One PUT of a chapter's FLACs to ``@stage/<stage_dir>/``."""
    local = chapter.resolve().as_posix()
    if "'" in local:
        raise ValueError(f"local path {local!r} contains a quote")
    fqn = identifiers.qualified(stage["database"], stage["schema"], stage["stage"])
    target = identifiers.validate_stage_path(stage_dir)
    return (
        f"PUT 'file://{local}/*.flac' @{fqn}/{target}/ "
        f"AUTO_COMPRESS=FALSE OVERWRITE=FALSE PARALLEL={int(parallel)}"
    )


def ingest(settings: dict, log=print) -> dict:
    subset = settings["subset"]
    tree = librispeech.fetch_subset(
        subset,
        settings["mirror"],
        Path(settings["work_dir"]),
        md5=settings.get("md5"),
        progress=False,
    )
    stage = settings["stage"]
    batch_key = settings["batch_key"]
    manifest = librispeech.build_manifest(tree, batch_key)
    utterances, rows = manifest.utterances, manifest.files
    if not utterances:
        raise RuntimeError(f"{tree} holds no <speaker>/<chapter>/*.flac files")
    sink = SnowflakeSink(settings["sink"]["database"], settings["sink"]["schema"])
    sink.ensure_tables()
    # Register before the PUT: the new-file sensor must never claim these files for a batch
    # of its own while they are uploading.
    sink.merge_rows("audio_files", rows, AUDIO_FILE_COLUMNS, "merge_into_audio_files")
    chapters = sorted({u.audio.parent for u in utterances})
    uploaded = 0
    with payload_connection(stage["database"], stage["schema"]) as conn:
        cur = conn.cursor()
        for chapter in chapters:
            rel = chapter.relative_to(tree).as_posix()
            cur.execute(put_chapter_command(chapter, stage, f"{tree.name}/{rel}"))
            uploaded += sum(str(r[6]).upper() == "UPLOADED" for r in cur.fetchall())
    log(f"{len(utterances)} files in {len(chapters)} chapter(s): {uploaded} uploaded")
    refs = manifest.references
    sink.merge_rows("references", refs, REFERENCE_COLUMNS, "merge_into_reference_transcripts")
    return {
        "files": len(rows),
        "uploaded": uploaded,
        "skipped_existing": len(rows) - uploaded,
        "references": len(refs),
        "batch_key": batch_key,
        "stage": "@" + ".".join((stage["database"], stage["schema"], stage["stage"])),
    }


def main() -> int:
    with open_dagster_pipes(message_writer=payload_message_writer()) as pipes:
        meta = ingest(pipes.get_extra("ingest"), log=pipes.log.info)
        pipes.report_asset_materialization(metadata=meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
