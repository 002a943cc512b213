"""New stage files → manifest rows → new ``transcripts`` batch partitions → one run per batch.

The discovery is incremental: the stage is listed from a modification-time watermark (minus an
overlap for clock skew and slow writers) and anti-joined with the manifest, so files registered
before — by ``librispeech_audio`` or an earlier tick — are never registered again. Files younger
than ``min_age_s`` are left for the next tick (they may still be being written). Every
``full_rescan_every`` ticks the whole stage is listed, to catch files copied in with old
modification times.

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
from .resources.stage import AudioStage, StageFile
from .resources.warehouse import TranscriptStore

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
    fresh = store.unregistered(sorted(by_path))
    cap = max(1, settings.max_files_per_batch)
    chunks = [fresh[i : i + cap] for i in range(0, len(fresh), cap)]
    batches: dict[str, list[StageFile]] = {}
    for key, chunk in zip(new_batch_keys(now, len(chunks)), chunks, strict=True):
        batches[key] = [by_path[p] for p in chunk]
        store.register_files(
            [
                {
                    "file_path": f.path,
                    "size_bytes": f.size_bytes,
                    "content_md5": f.md5,
                    "last_modified": f.last_modified,
                    "batch_key": key,
                    "source": "stage",
                }
                for f in batches[key]
            ]
        )
    return Discovery(batches, len(candidates), ScanCursor(horizon, cursor.ticks + 1))


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
        store.ensure_tables()
        stranded = stranded_batches(
            store, context.instance.get_dynamic_partitions(transcript_batches.name)
        )
        found = discover_new_files(stage, store, cursor, new_files)
        keys = stranded + list(found.batches)
        files = sum(len(v) for v in found.batches.values())
        context.log.info(
            f"scanned {found.scanned} candidate file(s); {files} new in "
            f"{len(found.batches)} batch(es); {len(stranded)} stranded batch(es) re-emitted"
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
    store.ensure_tables()
    instance = context.instance
    stranded = stranded_batches(store, instance.get_dynamic_partitions(transcript_batches.name))
    found = discover_new_files(stage, store, ScanCursor(), new_files)
    keys = stranded + list(found.batches)
    if not keys:
        return dg.SkipReason("no new files")
    instance.add_dynamic_partitions(transcript_batches.name, keys)
    return _requests(keys)
