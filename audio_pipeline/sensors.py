"""New stage files → manifest rows → new ``transcripts`` batch partitions → one run per batch.

The discovery is incremental: the stage is listed from a modification-time watermark (minus an
overlap for clock skew and slow writers) and anti-joined with the manifest, so files registered
before — by ``librispeech_audio`` or an earlier tick — are never registered again. Files younger
than ``min_age_s`` are left for the next tick (they may still be being written). Every
``full_rescan_every`` ticks the whole stage is listed, to catch files copied in with old
modification times.

A file already registered whose size or modification time changed is a new content version of
it: it moves to the tick's new batch and is transcribed again (its old transcript row stays until
the new one replaces it; see ``sql/duckdb/merge_changed_audio_files.sql``). No file is hashed
here: the payload hashes the bytes it reads, and the ingest hashes in bulk.

A tick registers the files under new batch keys, then returns the partitions and run requests
(``run_key`` = batch key) together with the new cursor. If a tick dies between registering and
returning, the next tick finds the registered batches that have no partition and re-emits them,
so no file is ever stranded.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from .partitions import transcript_batches
from .resources.compute import TranscriptionCompute
from .resources.stage import AudioStage, StageFile
from .resources.warehouse import TranscriptStore
from .transcription.sinks import DuckDBLockedError, manifest_row

SENSOR_BATCH_PREFIX = "drop-"


@dataclass
class ScanCursor:
    watermark: dt.datetime | None = None
    ticks: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> ScanCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        mark = data.get("watermark")
        return cls(dt.datetime.fromisoformat(mark) if mark else None, int(data.get("ticks", 0)))

    def dump(self) -> str:
        mark = self.watermark.isoformat() if self.watermark else None
        return json.dumps({"watermark": mark, "ticks": self.ticks})


@dataclass
class Discovery:
    batches: dict[str, list[StageFile]] = field(default_factory=dict)
    scanned: int = 0
    cursor: ScanCursor = field(default_factory=ScanCursor)
    changed: int = 0


class NewFilesSettings(dg.ConfigurableResource):
    """Settings of the new-file discovery (sensor and schedule)."""

    max_files_per_batch: int = 5000
    overlap_s: float = 300.0
    min_age_s: float = 5.0
    full_rescan_every: int = 60
    prefix: str = ""


def new_batch_keys(now: dt.datetime, count: int) -> list[str]:
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    return [f"{SENSOR_BATCH_PREFIX}{stamp}-{i:04d}" for i in range(count)]


def discover_new_files(
    stage: AudioStage,
    store: TranscriptStore,
    cursor: ScanCursor,
    settings: NewFilesSettings,
    now: dt.datetime | None = None,
) -> Discovery:
    """List new stage files, register them in the manifest under new batch keys."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    horizon = now - dt.timedelta(seconds=settings.min_age_s)
    full = cursor.watermark is None or cursor.ticks % max(1, settings.full_rescan_every) == 0
    since = None if full else cursor.watermark - dt.timedelta(seconds=settings.overlap_s)
    candidates = [
        f for f in stage.list_new_files(since, settings.prefix) if f.last_modified <= horizon
    ]
    by_path = {f.path: f for f in candidates}
    store.ensure_tables()
    known = store.known_files(sorted(by_path))
    work, changed, adopted = [], set(), []
    for path in sorted(by_path):
        if path not in known:
            work.append(path)
        elif content_changed(known[path], by_path[path]):
            work.append(path)
            changed.add(path)
        elif known[path][1] is None:
            adopted.append(path)
    # Registered without a modification time (the ingest job): learn it, same content.
    store.register_files([_row(by_path[p], None) for p in adopted])
    cap = max(1, settings.max_files_per_batch)
    chunks = [work[i : i + cap] for i in range(0, len(work), cap)]
    batches: dict[str, list[StageFile]] = {}
    for key, chunk in zip(new_batch_keys(now, len(chunks)), chunks, strict=True):
        batches[key] = [by_path[p] for p in chunk]
        store.register_files([_row(by_path[p], key) for p in chunk if p not in changed])
        store.register_changes([_row(by_path[p], key) for p in chunk if p in changed])
    return Discovery(
        batches, len(candidates), ScanCursor(horizon, cursor.ticks + 1), changed=len(changed)
    )


def content_changed(known: tuple[int, dt.datetime | None], listed: StageFile) -> bool:
    """A registered file's content changed: another size, or another (known) modification time."""
    size, modified = known
    if size != listed.size_bytes:
        return True
    return modified is not None and abs((modified - listed.last_modified).total_seconds()) > 1e-3


def _row(f: StageFile, batch_key: str | None) -> dict:
    return manifest_row(f.path, f.size_bytes, batch_key, "stage", f.md5, f.last_modified)


def _for_tick(store: TranscriptStore, fn):
    """Run ``fn(store)`` with the store's short tick waits; a busy warehouse fails the tick fast."""
    try:
        return fn(store.for_tick())
    except DuckDBLockedError as exc:
        raise RuntimeError(
            f"the warehouse is busy, so this tick registered nothing (the next tick retries): {exc}"
        ) from exc


def stranded_batches(store: TranscriptStore, known_partitions: Sequence[str]) -> list[str]:
    """Batches registered in the manifest that never became partitions (a tick died)."""
    known = set(known_partitions)
    return [k for k in store.batch_keys() if k not in known]


transcribe_new_files = dg.define_asset_job(
    "transcribe_new_files",
    selection=["transcripts"],
    partitions_def=transcript_batches,
    description="Transcribe one batch of newly discovered stage files.",
)


def _requests(keys: list[str]) -> list[dg.RunRequest]:
    return [dg.RunRequest(run_key=k, partition_key=k) for k in keys]


def build_new_stage_files_sensor(minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_stage_files_sensor",
        job=transcribe_new_files,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers new audio files in the stage and transcribes them, one batch "
        "partition per at most max_files_per_batch files.",
    )
    def new_stage_files_sensor(
        context: dg.SensorEvaluationContext,
        stage: AudioStage,
        store: TranscriptStore,
        new_files: NewFilesSettings,
    ):
        cursor = ScanCursor.parse(context.cursor)
        known_partitions = context.instance.get_dynamic_partitions(transcript_batches.name)

        def scan(tick_store: TranscriptStore):
            tick_store.ensure_tables()
            stranded = stranded_batches(tick_store, known_partitions)
            return stranded, discover_new_files(stage, tick_store, cursor, new_files)

        stranded, found = _for_tick(store, scan)
        keys = stranded + list(found.batches)
        files = sum(len(v) for v in found.batches.values())
        context.log.info(
            f"scanned {found.scanned} candidate file(s); {files - found.changed} new and "
            f"{found.changed} changed in {len(found.batches)} batch(es); {len(stranded)} "
            "stranded batch(es) re-emitted"
        )
        return dg.SensorResult(
            run_requests=_requests(keys),
            dynamic_partitions_requests=[transcript_batches.build_add_request(keys)]
            if keys
            else [],
            cursor=found.cursor.dump(),
            skip_reason=None if keys else dg.SkipReason(f"no new files ({found.scanned} seen)"),
        )

    return new_stage_files_sensor


def build_stop_orphaned_jobs_sensor(minimum_interval_s: int = 30):
    """The run-failure sensor that stops a failed run's compute jobs; it looks every
    ``minimum_interval_s`` seconds (30 at most: a GPU job left running costs money)."""

    @dg.run_failure_sensor(
        name="stop_orphaned_ray_jobs",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=max(1, min(minimum_interval_s, 30)),
        description="Stops the compute job of a run that failed, e.g. one that run monitoring "
        "found dead after its process was killed.",
    )
    def stop_orphaned_ray_jobs(context: dg.RunFailureSensorContext, compute: TranscriptionCompute):
        stopped = compute.stop_run_jobs(context.dagster_run.run_id)
        if stopped:
            context.log.info(
                f"run {context.dagster_run.run_id} failed; stopped {', '.join(stopped)}"
            )

    return stop_orphaned_ray_jobs


@dg.schedule(
    name="transcribe_new_files_schedule",
    cron_schedule="0 * * * *",
    job=transcribe_new_files,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly alternative to the sensor: registers new stage files and transcribes them.",
)
def transcribe_new_files_schedule(
    context: dg.ScheduleEvaluationContext,
    stage: AudioStage,
    store: TranscriptStore,
    new_files: NewFilesSettings,
):
    # No cursor on schedules: a full scan, anti-joined with the manifest.
    instance = context.instance
    known_partitions = instance.get_dynamic_partitions(transcript_batches.name)

    def scan(tick_store: TranscriptStore):
        tick_store.ensure_tables()
        stranded = stranded_batches(tick_store, known_partitions)
        return stranded, discover_new_files(stage, tick_store, ScanCursor(), new_files)

    stranded, found = _for_tick(store, scan)
    keys = stranded + list(found.batches)
    if not keys:
        return dg.SkipReason("no new files")
    instance.add_dynamic_partitions(transcript_batches.name, keys)
    return _requests(keys)
