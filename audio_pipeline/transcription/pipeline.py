"""The Ray Data plan: pending files → decode on CPU tasks → Whisper actor pool → MERGE.

Decoding and resampling run as stateless CPU tasks so that the Whisper actors, which load the model
once in ``__init__``, never wait on file I/O. Rows stream back to the driver, which MERGEs them
into the transcript table as blocks finish: a job killed half-way keeps what it finished.
Every file ends as exactly one row, ``ok`` or ``error``; one bad file never fails the batch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from queue import Empty, Queue

import numpy as np

from . import model_stage, quality, snowflake_auth
from .audio import SILENCE_DBFS, decode_audio
from .engine import ENGINES, DecodingOptions, Transcription, load_engine
from .pieces import PieceOptions, Stitcher, estimated_pieces, piece_rows, whole_piece
from .settings import JobSettings
from .sinks import PendingFile, open_sink
from .sources import StageUnreachableError, open_source

log = logging.getLogger(__name__)

PACK_ROWS_FACTOR = 4


class Progress:
    """Files done / total, x-real-time and ETA: logged as blocks finish, and at least every
    ``interval_s`` while the job works, so that a stuck job is told from a slow one."""

    def __init__(self, total: int, log_fn: Callable[[str], None], interval_s: float):
        self.total, self.log_fn, self.interval_s = total, log_fn, interval_s
        self.done, self.audio_s = 0, 0.0
        self.started = self._last = time.monotonic()
        self._lock = threading.Lock()  # one writer at a time on the Pipes channel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        speed = self.audio_s / elapsed if elapsed > 0 else 0.0
        if self.done:
            left = (self.total - self.done) * elapsed / self.done
            eta = f"ETA {int(left // 60)}:{int(left % 60):02d}"
        else:
            eta = "ETA unknown until the first file is done"
        return (
            f"progress: {self.done}/{self.total} files, {speed:.1f}x real time, {eta} "
            f"({elapsed:.0f} s elapsed)"
        )

    def add(self, files: int, audio_s: float) -> None:
        with self._lock:
            self.done += files
            self.audio_s += audio_s
            self._emit()

    def _emit(self) -> None:
        self._last = time.monotonic()
        self.log_fn(self.line())

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.interval_s)):
            with self._lock:
                if time.monotonic() - self._last >= self.interval_s:
                    self._emit()


@dataclass
class JobSummary:
    files: int = 0
    ok: int = 0
    errors: int = 0
    flagged: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    wer: float | None = None
    wer_files: int = 0
    model_id: str = ""
    engine: str = ""
    actors: int = 0
    threads_per_actor: int = 0
    calls_per_actor: int = 0
    nodes: int = 0
    expected_nodes: int | None = None
    error_samples: list[str] = field(default_factory=list)
    preview: list[dict] = field(default_factory=list)
    files_by_batch: dict[str, int] = field(default_factory=dict)
    long_files: int = 0  # files cut into pieces
    pieces: int = 0
    piece_nodes: int = 0  # Ray nodes whose actors transcribed pieces

    @property
    def x_real_time(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"x_real_time": self.x_real_time}

    def metadata(self) -> dict:
        """Plain values for the materialization (no preview)."""
        keys = ("files", "ok", "errors", "flagged", "nodes", "actors", "threads_per_actor")
        keys += ("calls_per_actor", "wer_files")
        meta = {k: getattr(self, k) for k in keys}
        meta |= {
            "audio_seconds": round(self.audio_s, 2),
            "audio_hours": round(self.audio_s / 3600, 4),
            "wall_seconds": round(self.wall_s, 2),
            "x_real_time": round(self.x_real_time, 2),
            "model_id": self.model_id,
            "engine": self.engine,
        }
        if self.wer is not None:
            meta["wer_percent"] = quality.percent(self.wer)
        if self.expected_nodes is not None:
            meta["expected_nodes"] = self.expected_nodes
        if self.long_files:
            meta |= {k: getattr(self, k) for k in ("long_files", "pieces", "piece_nodes")}
        return meta


def decode_batch(
    batch: dict[str, np.ndarray],
    source_spec: dict,
    max_file_bytes: int,
    max_duration_s: float,
    long_file_s: float | None = None,
    piece_s: float = PieceOptions.max_s,
) -> dict[str, np.ndarray]:
    """Read and decode each file; a failure becomes an ``error`` value, never an exception.

    The md5 of the bytes read is kept: each row says which content it describes. A file longer
    than ``long_file_s`` becomes several rows, its pieces (see :mod:`.pieces`).
    """
    source = open_source(source_spec)
    options = PieceOptions(long_s=long_file_s, max_s=piece_s) if long_file_s else None
    n = len(batch["file_path"])
    versions = batch.get("content_version", np.ones(n, dtype=np.int64))
    rows = []
    for path, batch_key, version in zip(
        batch["file_path"], batch["batch_key"], versions, strict=True
    ):
        data = None
        base = {"file_path": path, "batch_key": batch_key, "content_version": version}
        try:
            data = source.read_bytes(str(path), max_bytes=max_file_bytes)
            audio = decode_audio(data, str(path), max_duration_s=max_duration_s)
            parts = (
                piece_rows(audio.samples, options)
                if options
                else [whole_piece(audio.samples, audio.rms_dbfs)]
            )
            decoded = [p | {"decode_error": ""} for p in parts]
        except StageUnreachableError:  # not this file's fault: the job stops, diagnosed
            raise
        except Exception as exc:  # a stage read (connector, HTTP, SDK errors) or a decode
            decoded = [whole_piece(None) | {"decode_error": f"{type(exc).__name__}: {exc}"}]
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest() if data else ""
        rows += [base | {"content_md5": md5} | p for p in decoded]
    return {
        "file_path": np.array([r["file_path"] for r in rows], dtype=object),
        "batch_key": np.array([r["batch_key"] for r in rows], dtype=object),
        "content_version": np.array([r["content_version"] for r in rows], dtype=np.int64),
        "content_md5": np.array([r["content_md5"] for r in rows], dtype=object),
        "pcm": np.array([r["pcm"] for r in rows], dtype=object),
        "duration_s": np.array([r["duration_s"] for r in rows], dtype=np.float64),
        "rms_dbfs": np.array([r["rms_dbfs"] for r in rows], dtype=np.float64),
        "decode_error": np.array([r["decode_error"] for r in rows], dtype=object),
        "piece": np.array([r["piece"] for r in rows], dtype=np.int64),
        "pieces": np.array([r["pieces"] for r in rows], dtype=np.int64),
        "offset_s": np.array([r["offset_s"] for r in rows], dtype=np.float64),
        "file_duration_s": np.array([r["file_duration_s"] for r in rows], dtype=np.float64),
    }


class Transcriber:
    """Ray Data actor: loads the engine once, transcribes batches of decoded audio into rows."""

    def __init__(
        self,
        engine: str,
        model_path: str,
        model_id: str,
        options: DecodingOptions,
        run_id: str,
        threads: int | None = None,
        revision: str | None = None,
        calls: int = 1,
        home: str | None = None,
    ):
        if model_stage.is_staged(model_path):  # a Hub model copied once to the models stage
            model_path = str(model_stage.ensure_local(model_path, home, snowflake_auth.connect))
            revision = None
        self.engine = load_engine(
            engine, model_path, options, threads=threads, revision=revision, workers=calls
        )
        self.model_id = model_id
        self.run_id = run_id
        self.node_id = _node_id()

    def _row(self, batch, i, status, error=None, result=None, flags=()) -> dict:
        path, batch_key, duration = (
            batch["file_path"][i],
            batch["batch_key"][i],
            batch["duration_s"][i],
        )
        return {
            "file_path": str(path),
            "model_id": self.model_id,
            "engine": self.engine.name,
            "status": status,
            "error": error,
            "text": result.text if result else None,
            "language": result.language if result else None,
            "duration_s": float(duration),
            "segments": result.segments_as_dicts() if result else [],
            "quality_flags": list(flags),
            "run_id": self.run_id,
            "batch_key": str(batch_key),
            "transcribed_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            "content_version": int(batch["content_version"][i]),
            "content_md5": str(batch["content_md5"][i]) or None,
        } | self._piece(batch, i)

    def _piece(self, batch, i) -> dict:
        """Where a piece of a long file sits in it, for stitching (a whole file: 0 of 1)."""
        if "pieces" not in batch:
            return {}
        return {
            "piece": int(batch["piece"][i]),
            "pieces": int(batch["pieces"][i]),
            "offset_s": float(batch["offset_s"][i]),
            "file_duration_s": float(batch["file_duration_s"][i]),
            "node_id": self.node_id,
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        n = len(batch["file_path"])
        rows: list[dict | None] = [None] * n
        good = []
        for i in range(n):
            if not batch["decode_error"][i] and batch["rms_dbfs"][i] < SILENCE_DBFS:
                # Whisper invents text on silence; there is nothing to transcribe.
                rows[i] = self._row(
                    batch,
                    i,
                    "ok",
                    result=Transcription("", None),
                    flags=["silence"],
                )
            elif batch["decode_error"][i]:
                rows[i] = self._row(batch, i, "error", batch["decode_error"][i])
            else:
                good.append(i)
        audios = {i: np.frombuffer(batch["pcm"][i], dtype=np.float32) for i in good}
        results = {}
        for group in _packing_groups(batch, good):
            try:
                results |= dict(
                    zip(group, self.engine.transcribe([audios[i] for i in group]), strict=True)
                )
            except Exception:  # isolate the failing file(s): retry one by one
                for i in group:
                    try:
                        results[i] = self.engine.transcribe([audios[i]])[0]
                    except Exception as exc:
                        rows[i] = self._row(
                            batch,
                            i,
                            "error",
                            f"transcription failed: {type(exc).__name__}: {exc}",
                        )
        for i, result in results.items():
            rows[i] = self._row(
                batch,
                i,
                "ok",
                result=result,
                flags=quality.hallucination_flags(result.text, float(batch["rms_dbfs"][i])),
            )
        return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}


def _node_id() -> str:
    """The Ray node this actor runs on ("" outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # the id only tells which node transcribed a piece
        return ""


def plan_actors(
    cpus: float,
    gpus: float,
    actors: int | None,
    threads: int | None,
    nodes: int = 1,
    expected_nodes: int | None = None,
) -> tuple[int, int, int]:
    """(actors, threads per actor, GPUs per actor) for a cluster's resources.

    On GPUs: one actor per GPU of every node the job will have (``expected_nodes``, e.g. a
    Snowflake job's ``SNOWFLAKE_JOBS_COUNT``, counts nodes that are still joining).
    """
    if gpus >= 1:
        per_node = max(1, int(gpus // max(nodes, 1)))
        n = actors or max(int(gpus), (expected_nodes or 0) * per_node)
        cpus_per_node = cpus / max(nodes, 1)
        return n, threads or max(1, int(cpus_per_node // per_node) - 1), 1
    cpus = max(1, int(cpus))
    threads = threads or min(cpus, 4)
    n = actors or max(1, cpus // threads)
    return n, threads, 0


def plan_calls(engine: str, gpus: int, threads: int, calls: int | None) -> tuple[int, int]:
    """(calls at once per actor, threads per call).

    On CPU, ctranslate2 runs one single-threaded call per thread of the actor, each on its own
    model replica (weights shared): ``make bench`` measured CTranslate2 scaling better over
    concurrent calls than over threads within one call (README, "Throughput"). On GPU, and for
    engines that are not thread-safe, one call uses all the actor's threads.
    """
    concurrent = ENGINES[engine].concurrent if engine in ENGINES else False
    if calls:
        if calls > 1 and not concurrent:
            raise ValueError(f"calls_per_actor > 1 needs the ctranslate2 engine, not {engine!r}")
        return calls, max(1, threads // calls)
    if concurrent and not gpus and threads > 1:
        return threads, 1
    return 1, threads


def actor_cpus(cpus: float, actors: int) -> float:
    """Logical CPUs one Whisper actor asks for: at most 1, and no more than its share of the
    cluster, so that any number of actors can be placed. Decode tasks ask for none: however
    many actors (of this job or another one) hold the CPUs, decoding can always run, so a job
    always progresses."""
    return max(0.01, round(min(1.0, cpus / max(actors, 1)), 2))


class JobStalledError(RuntimeError):
    """No row came back for ``stall_timeout_s``."""


def diagnose_stall(ray, idle_s: float, rows: int, total: int) -> str:
    """What the cluster is waiting for: resources, pending actors and tasks, last progress."""
    have, free = ray.cluster_resources(), ray.available_resources()
    lines = [
        f"no progress for {idle_s:.0f} s: {rows}/{total} rows written so far",
        "cluster CPU {:.2f} of {:.2f} free, GPU {:.2f} of {:.2f} free".format(
            free.get("CPU", 0), have.get("CPU", 0), free.get("GPU", 0), have.get("GPU", 0)
        ),
    ]
    try:
        from ray.util.state import list_actors, list_tasks

        for actor in list_actors(filters=[("state", "=", "PENDING_CREATION")], limit=20):
            lines.append(f"pending actor {actor.class_name} (job {actor.job_id})")
        for task in list_tasks(filters=[("state", "=", "PENDING_NODE_ASSIGNMENT")], limit=20):
            need = getattr(task, "required_resources", None) or {}
            lines.append(f"pending task {task.name} needs {need} (job {task.job_id})")
    except Exception as exc:  # the state API needs the dashboard; the rest still helps
        lines.append(f"(pending actors and tasks unavailable: {exc})")
    return "\n".join(lines)


def expected_nodes_from_env() -> int | None:
    """The node count a Snowflake ML Job asked for (its runtime sets ``SNOWFLAKE_JOBS_COUNT``)."""
    value = os.environ.get("SNOWFLAKE_JOBS_COUNT", "").strip()
    return int(value) if value.isdigit() else None


def rows_per_call(settings: JobSettings, files: int | None = None, slots: int = 1) -> int:
    """Clips handed to one actor call: more when packing, so that windows fill up; fewer when
    ``files`` would otherwise leave some of the ``slots`` (actors x calls at once) idle at the
    end: each slot gets about four calls, never fewer than ``batch_size`` clips each."""
    bs = settings.decoding.batch_size
    packing = settings.engine == "ctranslate2" and settings.decoding.pack
    rows = bs * (PACK_ROWS_FACTOR if packing else 1)
    if files:
        rows = min(rows, max(bs, math.ceil(files / (4 * max(1, slots)))))
    return rows


@dataclass
class Plan:
    actors: int
    threads: int
    gpus_per_actor: int
    nodes: int
    expected_nodes: int | None
    rows: int = 0
    calls: int = 1
    long_files: int = 0
    pieces: int = 0
    piece_nodes: int = 0


def _packing_groups(batch: dict, rows: list[int]) -> list[list[int]]:
    """Rows that may share a packed window: whole files together, and each long file's pieces
    only with each other. A word that a segment carries across a window's clip boundary then
    stays inside its own file, in order, where stitching puts it back; never in another file."""
    groups: dict[str, list[int]] = {}
    pieces = batch.get("pieces")
    for i in rows:
        key = str(batch["file_path"][i]) if pieces is not None and pieces[i] > 1 else ""
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def transcribe_files(
    settings: JobSettings,
    files: list[PendingFile],
    on_rows: Callable[[list[dict]], None],
    log_fn: Callable[[str], None] = print,
) -> Plan:
    """Run the Ray Data plan over ``files``, streaming each finished block to ``on_rows``."""
    import ray  # a loopback RAY_ADDRESS is handled in this package's __init__

    address = os.environ.get("RAY_ADDRESS", "auto")

    if not ray.is_initialized():
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # Progress goes to Dagster through Pipes; Ray Data would warn that its bars are off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx.print_on_execution_start = False
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    expected = expected_nodes_from_env()
    actors, threads, gpus = plan_actors(
        resources.get("CPU", 1),
        resources.get("GPU", 0),
        settings.actors,
        settings.threads_per_actor,
        nodes=nodes,
        expected_nodes=expected,
    )
    # Work items: a file, or each piece of a long one (estimated from its size for the plan).
    long_s = settings.long_file_s
    options = PieceOptions(long_s=long_s, max_s=settings.piece_s) if long_s else None
    items_est = sum(estimated_pieces(f.size_bytes, options) if options else 1 for f in files)
    actors = max(1, min(actors, math.ceil(items_est / max(1, settings.decoding.batch_size))))
    calls, call_threads = plan_calls(settings.engine, gpus, threads, settings.calls_per_actor)
    log_fn(
        f"cluster: {nodes} node(s)"
        + (f" of {expected} expected" if expected else "")
        + f", {resources.get('CPU', 0):.0f} CPU, {resources.get('GPU', 0):.0f} GPU; "
        f"{actors} Whisper actor(s) x {threads} thread(s)"
        + (f" ({calls} calls at once x {call_threads} thread(s))" if calls > 1 else "")
        + f", {gpus} GPU each"
    )
    # Similar sizes batch together (fewer padded frames per generate call), largest first: the
    # last calls, which may leave actors idle, are the shortest.
    ordered = sorted(files, key=lambda f: f.size_bytes, reverse=True)
    items = [
        {"file_path": f.file_path, "batch_key": f.batch_key, "content_version": f.content_version}
        for f in ordered
    ]
    blocks = max(1, min(len(items), 4 * actors * 4))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        decode_batch,
        batch_size=settings.decode_batch_size,
        batch_format="numpy",
        num_cpus=0,  # see actor_cpus: decoding never waits for CPUs held by actors
        # Decoding is cheap next to Whisper on CPU (about 1 % of a job): one worker per actor
        # there (each worker is a process to start); two per GPU actor, which is faster.
        compute=ray.data.TaskPoolStrategy(size=2 * actors if gpus else actors),
        **({"runtime_env": {"env_vars": env}} if (env := snowflake_auth.task_env()) else {}),
        fn_kwargs={
            "source_spec": settings.source,
            "max_file_bytes": settings.max_file_bytes,
            "max_duration_s": settings.max_duration_s,
            "long_file_s": long_s,
            "piece_s": settings.piece_s,
        },
    )
    call_rows = rows_per_call(settings, items_est, actors * calls)
    if items_est > len(files):
        # A piece fills a window by itself (nothing to pack), so larger calls gain little: calls
        # small enough that each slot gets about four, and none waits on a long last one.
        call_rows = min(call_rows, max(1, math.ceil(items_est / (4 * actors * calls))))
        # A long file's pieces leave its decode task as one block, which one actor would take
        # whole: blocks of one call's rows spread the pieces over every actor.
        ds = ds.repartition(target_num_rows_per_block=call_rows)
    ds = ds.map_batches(
        Transcriber,
        batch_size=call_rows,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=actors,
            **(
                {"max_concurrent_calls_per_actor": calls, "enable_true_multi_threading": True}
                if calls > 1
                else {}
            ),
        ),
        num_gpus=gpus,
        num_cpus=actor_cpus(resources.get("CPU", 1), actors),
        fn_constructor_kwargs={
            "engine": settings.engine,
            "model_path": settings.model_path,
            "model_id": settings.model_id,
            "options": settings.decoding,
            "run_id": settings.run_id,
            "threads": call_threads,
            "calls": calls,
            "revision": settings.model_revision,
            "home": settings.home,
        },
        # the actors read a staged model from the stage on their own connection
        **({"runtime_env": {"env_vars": env}} if (env := snowflake_auth.task_env()) else {}),
    )
    plan = Plan(actors, threads, gpus, nodes, expected, calls=calls)
    stitcher = Stitcher()

    def on_pieces(rows: list[dict]) -> None:
        if whole := stitcher.add(rows):  # files whose pieces have all come back
            plan.rows += len(whole)
            on_rows(whole)

    _drain(
        ds,
        on_pieces,
        settings.stall_timeout_s,
        lambda idle, rows: diagnose_stall(ray, idle, rows, len(files)),
    )
    if stitcher.unfinished:
        raise RuntimeError(f"pieces missing for {', '.join(stitcher.unfinished[:5])}")
    plan.long_files, plan.pieces = stitcher.cut_files, stitcher.pieces
    plan.piece_nodes = len(stitcher.piece_nodes)
    return plan


def _batches(ds, stall_timeout_s: float | None, diagnose):
    """``ds``'s batches; raises :class:`JobStalledError` when none comes for the timeout."""
    if stall_timeout_s is None:
        yield from ds.iter_batches(batch_size=None, batch_format="pandas")
        return
    done = object()
    queue: Queue = Queue(maxsize=2)

    def produce():
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
                queue.put(batch)
            queue.put(done)
        except BaseException as exc:
            queue.put(exc)

    threading.Thread(target=produce, daemon=True, name="drain").start()
    last = time.monotonic()
    rows = 0
    while True:
        try:
            item = queue.get(timeout=min(stall_timeout_s, 5.0))
        except Empty:
            if time.monotonic() - last > stall_timeout_s:
                raise JobStalledError(diagnose(time.monotonic() - last, rows)) from None
            continue
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        last = time.monotonic()
        rows += len(item)
        yield item


def _drain(ds, on_rows, stall_timeout_s: float | None = None, diagnose=None) -> int:
    count = 0
    for batch in _batches(ds, stall_timeout_s, diagnose):
        rows = batch.to_dict("records")
        for row in rows:
            segs = row.get("segments")
            row["segments"] = [dict(s) for s in segs] if segs is not None else []
            flags = row.get("quality_flags")
            row["quality_flags"] = [str(f) for f in flags] if flags is not None else []
        on_rows(rows)
        count += len(rows)
    return count


def run_job(settings: JobSettings, log_fn: Callable[[str], None] = print) -> JobSummary:
    """Transcribe the pending files of ``settings.batch_keys`` and MERGE the rows."""
    started = time.perf_counter()
    sink = open_sink(settings.sink)
    files = sink.pending_files(
        settings.batch_keys,
        settings.model_id or settings.model,
        force=settings.force,
        retry_errors=settings.retry_errors,
    )
    summary = JobSummary(model_id=settings.model_id or settings.model, engine=settings.engine)
    log_fn(f"{len(files)} file(s) to transcribe in batch(es) {', '.join(settings.batch_keys)}")
    if not files:
        summary.wall_s = time.perf_counter() - started
        return summary
    references = sink.references([f.file_path for f in files])
    pairs: list[tuple[str, str]] = []

    def on_rows(rows: list[dict]) -> None:
        sink.merge_transcripts(rows)
        for row in rows:
            summary.files += 1
            batch = str(row["batch_key"])
            summary.files_by_batch[batch] = summary.files_by_batch.get(batch, 0) + 1
            summary.audio_s += row["duration_s"] or 0.0
            summary.flagged += bool(row.get("quality_flags"))
            if row["status"] == "ok":
                summary.ok += 1
                if row["file_path"] in references:
                    pairs.append((references[row["file_path"]], row["text"] or ""))
            else:
                summary.errors += 1
                if len(summary.error_samples) < 10:
                    summary.error_samples.append(f"{row['file_path']}: {row['error']}")
            if len(summary.preview) < 5:
                summary.preview.append({k: row[k] for k in ("file_path", "status", "text")})
        progress.add(len(rows), sum(row["duration_s"] or 0.0 for row in rows))

    with Progress(len(files), log_fn, settings.progress_interval_s) as progress:
        plan = transcribe_files(settings, files, on_rows, log_fn)
    summary.actors, summary.threads_per_actor = plan.actors, plan.threads
    summary.calls_per_actor = plan.calls
    summary.nodes, summary.expected_nodes = plan.nodes, plan.expected_nodes
    summary.long_files, summary.pieces = plan.long_files, plan.pieces
    summary.piece_nodes = plan.piece_nodes
    summary.wall_s = time.perf_counter() - started
    summary.wer = quality.corpus_wer(pairs)
    summary.wer_files = len(pairs)
    if summary.files != len(files):
        raise RuntimeError(f"{len(files)} files were planned but {summary.files} rows came back")
    return summary
