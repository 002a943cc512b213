"""New stage files → manifest rows → new ``transcripts`` batch partitions → one run per batch.

One discovery function (``new_files_tick``) serves the sensor and the schedule. Its work is
bounded: a tick handles at most ``max_files_per_tick`` files and stops after ``tick_budget_s``
seconds, well inside Dagster's sensor deadline, keeping its place in the cursor; the next tick
goes on. A backlog of any size is registered over several ticks, every file in one batch.

The stage is walked in passes, in a fixed order, so that a pass's position is one path. A
new-file pass looks at what changed since the watermark (minus ``overlap_s`` for slow writers);
every ``full_rescan_every`` ticks a full pass looks at every file, to catch files copied in with
old modification times or overwritten in place. Files younger than ``min_age_s`` wait for the
next pass. Each stage backend makes a pass cost what is new (``resources/stage.py``): the local
folder opens only folders that changed (and, on a full pass, compares each folder's digest with
the manifest's); the Snowflake stage answers "anything new?" from cloud-services statements, so
an idle tick resumes no warehouse.

A file already registered whose size or modification time changed is a new content version of
it: it moves to the tick's new batch and is transcribed again (its old transcript row stays until
the new one replaces it; see ``sql/duckdb/merge_changed_audio_files.sql``). No file is hashed
here: the payload hashes the bytes it reads, and the ingest hashes in bulk.

A tick registers files under new batch keys, then returns the partitions and run requests
(``run_key`` = batch key) with the new cursor. If it dies in between, its cursor is not saved:
the next tick walks the same files again, finds them registered under a batch that is no
partition, and re-emits that batch, so no file is ever stranded.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from .partitions import transcript_batches
from .resources.compute import TranscriptionCompute
from .resources.stage import AudioStage, Mark, ScanPass, StageFile
from .resources.warehouse import TranscriptStore
from .transcription.sinks import DuckDBLockedError, manifest_row

SENSOR_BATCH_PREFIX = "drop-"
LOOKUP_CHUNK = 2500  # files per manifest lookup (and per budget check)


@dataclass
class ScanCursor:
    """The sensor's cursor (JSON). Cursors of earlier versions (watermark and ticks) parse."""

    watermark: dt.datetime | None = None
    ticks: int = 0
    scan: ScanPass | None = None  # the pass in progress
    memory: dict = field(default_factory=dict)  # the stage backend's own notes

    @classmethod
    def parse(cls, raw: str | None) -> ScanCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        mark = data.get("watermark")
        scan = data.get("pass")
        return cls(
            dt.datetime.fromisoformat(mark) if mark else None,
            int(data.get("ticks", 0)),
            ScanPass.from_json(scan) if scan else None,
            dict(data.get("stage") or {}),
        )

    def dump(self) -> str:
        mark = self.watermark.isoformat() if self.watermark else None
        data = {"watermark": mark, "ticks": self.ticks}
        if self.scan is not None:
            data["pass"] = self.scan.to_json()
        if self.memory:
            data["stage"] = self.memory
        return json.dumps(data, separators=(",", ":"))


@dataclass
class Discovery:
    batches: dict[str, list[str]] = field(default_factory=dict)  # batch key → its file paths
    scanned: int = 0
    cursor: ScanCursor = field(default_factory=ScanCursor)
    changed: int = 0
    stranded: list[str] = field(default_factory=list)  # registered batches that are no partition
    idle: bool = False  # the stage said nothing changed: no pass, no store touched
    complete: bool = True  # the pass ended in this tick
    full: bool = False  # the pass looks at every file (not only what changed)


class NewFilesSettings(dg.ConfigurableResource):
    """Settings of the new-file discovery (sensor and schedule)."""

    max_files_per_batch: int = 5000
    overlap_s: float = 300.0
    min_age_s: float = 5.0
    full_rescan_every: int = 60
    prefix: str = ""
    tick_budget_s: float = 10.0
    max_files_per_tick: int = 100_000


def new_batch_keys(now: dt.datetime, count: int) -> list[str]:
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    return [f"{SENSOR_BATCH_PREFIX}{stamp}-{i:04d}" for i in range(count)]


def discover_new_files(
    stage: AudioStage,
    store: TranscriptStore,
    cursor: ScanCursor,
    settings: NewFilesSettings,
    now: dt.datetime | None = None,
    known_partitions: Iterable[str] | None = None,
) -> Discovery:
    """Go on with the stage's pass (or start one), registering new files under new batch keys,
    until the pass ends or the tick's budget is spent."""
    started = time.monotonic()
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    memory = json.loads(json.dumps(cursor.memory))  # the stage may change it: a copy
    scan = ScanPass.from_json(cursor.scan.to_json()) if cursor.scan else None
    ticks = cursor.ticks + 1
    if scan is None:
        full = cursor.watermark is None or cursor.ticks % max(1, settings.full_rescan_every) == 0
        if stage.prepare_tick(memory, idle_check=not full) is False:
            return Discovery(cursor=ScanCursor(cursor.watermark, ticks, None, memory), idle=True)
        since = None if full else cursor.watermark - dt.timedelta(seconds=settings.overlap_s)
        horizon = now - dt.timedelta(seconds=settings.min_age_s)
        scan = ScanPass(full=full, horizon=horizon, since=since)
    else:
        stage.prepare_tick(memory, idle_check=False)
    partitions = None if known_partitions is None else set(known_partitions)
    keys = iter(new_batch_keys(now, 10_000))
    batches: dict[str, list[str]] = {}  # registered: paths only (a tick's memory is bounded
    work: list[StageFile] = []  # by the batch being filled, not by max_files_per_tick)
    changed: set[str] = set()
    stranded: set[str] = set()
    chunk: list[StageFile] = []
    handled = scanned = 0
    tables_ready = False

    def flush_batch() -> None:
        nonlocal work
        if work:
            key = next(keys)
            batches[key] = [f.path for f in work]
            store.register_files([_row(f, key) for f in work if f.path not in changed])
            store.register_changes([_row(f, key) for f in work if f.path in changed])
            work = []

    def handle(files: list[StageFile]) -> None:
        nonlocal tables_ready
        if not files:
            return
        if not tables_ready:
            store.ensure_tables()
            tables_ready = True
        known = store.lookup([f.path for f in files])
        adopted = []
        for f in files:
            entry = known.get(f.path)
            if entry is None:
                work.append(f)
            elif content_changed(entry[:2], f):
                work.append(f)
                changed.add(f.path)
            else:
                if entry[1] != f.last_modified:  # unknown (the ingest) or less exact: learn it
                    adopted.append(f)
                if partitions is not None and entry[2] not in partitions:
                    stranded.add(entry[2])
            if len(work) >= max(1, settings.max_files_per_batch):
                flush_batch()
        # Registered without a (precise) modification time: learn it, same content.
        store.register_files([_row(f, None) for f in adopted])

    folder_keys: dict[str, list[str]] = {}

    def digests():
        nonlocal tables_ready
        if not tables_ready:
            store.ensure_tables()
            tables_ready = True
        found = store.folder_digests() or {}
        folder_keys.update((k, v[3]) for k, v in found.items())
        return {k: v[:3] for k, v in found.items()}

    longest = 0.0  # the longest step between two checks: the next one may take as long
    checked = started

    def spent() -> bool:
        nonlocal longest, checked
        now_s = time.monotonic()
        longest, checked = max(longest, now_s - checked), now_s
        return (
            now_s - started + longest >= settings.tick_budget_s
            or handled + len(chunk) >= settings.max_files_per_tick
        )

    items = stage.scan(scan, memory, settings.prefix, digests if scan.full else None)
    complete = True
    position = scan.after  # the last item taken from the scan: a file or a mark

    def settle() -> None:
        nonlocal chunk, handled
        handle(chunk)
        handled += len(chunk)
        chunk = []
        scan.after = position

    try:
        for item in items:
            position = item.path
            if isinstance(item, Mark):
                if item.matched is not None and partitions is not None:
                    stranded.update(k for k in folder_keys[item.matched] if k not in partitions)
                if not chunk:
                    scan.after = position
            else:
                scanned += 1
                if item.last_modified <= scan.horizon:  # else perhaps still being written
                    chunk.append(item)
                if len(chunk) < LOOKUP_CHUNK:
                    continue
                settle()
            if spent():
                settle()
                complete = False
                break
        else:
            settle()
    finally:
        items.close()
    flush_batch()
    if complete:
        stage.finish_pass(scan, memory)
        new_cursor = ScanCursor(scan.horizon, ticks, None, memory)
    else:
        new_cursor = ScanCursor(cursor.watermark, ticks, scan, memory)
    return Discovery(
        batches,
        scanned,
        new_cursor,
        changed=len(changed),
        stranded=sorted(stranded),
        complete=complete,
        full=scan.full,
    )


def content_changed(known: tuple[int, dt.datetime | None], listed: StageFile) -> bool:
    """A registered file's content changed: another size, or another (known) modification time."""
    size, modified = known
    if size != listed.size_bytes:
        return True
    return modified is not None and abs((modified - listed.last_modified).total_seconds()) > 1e-3


def _row(f: StageFile, batch_key: str | None) -> dict:
    return manifest_row(f.path, f.size_bytes, batch_key, "stage", f.md5, f.last_modified)


def new_files_tick(
    instance: dg.DagsterInstance,
    stage: AudioStage,
    store: TranscriptStore,
    settings: NewFilesSettings,
    cursor: ScanCursor,
) -> tuple[list[str], Discovery]:
    """The discovery the sensor and the schedule share: batch keys to request (stranded ones
    first) and what was found. The store's short tick waits make a busy warehouse fail fast."""
    known_partitions = instance.get_dynamic_partitions(transcript_batches.name)
    try:
        found = discover_new_files(
            stage, store.for_tick(), cursor, settings, known_partitions=known_partitions
        )
    except DuckDBLockedError as exc:
        raise RuntimeError(
            f"the warehouse is busy, so this tick registered nothing (the next tick retries): {exc}"
        ) from exc
    return found.stranded + list(found.batches), found


# The job takes its partitions from `transcripts` (partitions_def on an asset job is deprecated).
transcribe_new_files = dg.define_asset_job(
    "transcribe_new_files",
    selection=["transcripts"],
    description="Transcribe one batch of newly discovered stage files.",
)


def _requests(keys: list[str]) -> list[dg.RunRequest]:
    return [dg.RunRequest(run_key=k, partition_key=k) for k in keys]


def _summary(found: Discovery, keys: list[str]) -> str:
    if found.idle:
        return "nothing changed in the stage since the last pass"
    files = sum(len(v) for v in found.batches.values())
    where = "pass complete"
    if not found.complete:
        where = f"pass continues after {found.cursor.scan.after!r}"
    return (
        f"{'full' if found.full else 'new-file'} pass: "
        f"scanned {found.scanned} candidate file(s); {files - found.changed} new and "
        f"{found.changed} changed in {len(found.batches)} batch(es); {len(found.stranded)} "
        f"stranded batch(es) re-emitted; {where}"
    )


def build_new_stage_files_sensor(minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_stage_files_sensor",
        job=transcribe_new_files,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers new audio files in the stage and transcribes them, one batch "
        "partition per at most max_files_per_batch files; each tick does a bounded piece.",
    )
    def new_stage_files_sensor(
        context: dg.SensorEvaluationContext,
        stage: AudioStage,
        store: TranscriptStore,
        new_files: NewFilesSettings,
    ):
        cursor = ScanCursor.parse(context.cursor)
        keys, found = new_files_tick(context.instance, stage, store, new_files, cursor)
        summary = _summary(found, keys)
        context.log.info(summary)
        return dg.SensorResult(
            run_requests=_requests(keys),
            dynamic_partitions_requests=[transcript_batches.build_add_request(keys)]
            if keys
            else [],
            cursor=found.cursor.dump(),
            skip_reason=None if keys else dg.SkipReason(summary),
        )

    return new_stage_files_sensor


def build_stop_orphaned_jobs_sensor(minimum_interval_s: int = 30):
    """The run-failure sensor that stops a failed run's compute jobs, whatever the backend (Ray
    Jobs, Snowflake ML Jobs: ``TranscriptionCompute.stop_run_jobs``); it looks every
    ``minimum_interval_s`` seconds (30 at most: a GPU job left running costs money)."""

    @dg.run_failure_sensor(
        name="stop_orphaned_jobs",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=max(1, min(minimum_interval_s, 30)),
        description="Stops the compute jobs (Ray or Snowflake ML Jobs) of a run that failed, e.g. "
        "one that fail_dead_runs found dead after its process was killed.",
    )
    def stop_orphaned_jobs(context: dg.RunFailureSensorContext, compute: TranscriptionCompute):
        stopped = compute.stop_run_jobs(context.dagster_run.run_id)
        if stopped:
            context.log.info(
                f"run {context.dagster_run.run_id} failed; stopped {', '.join(stopped)}"
            )

    return stop_orphaned_jobs


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
    # No cursor on schedules: each evaluation is a bounded full pass from the start (folders
    # the manifest already matches cost no lookup), so a backlog goes on at the next hour.
    keys, _found = new_files_tick(context.instance, stage, store, new_files, ScanCursor())
    if not keys:
        return dg.SkipReason("no new files")
    context.instance.add_dynamic_partitions(transcript_batches.name, keys)
    return _requests(keys)
