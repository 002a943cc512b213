"""``PipesSnowflakeMLJobClient``: run a directory as a Snowflake ML Job under Dagster Pipes.

The context goes to the job in its environment (``PipesEnvContextInjector``). Messages come
back as chunks on the job's stage (``transcription/pipes_stage.py`` writes them on a connection
of its own; :class:`PipesMLJobStageMessageReader`, a ``PipesBlobStoreMessageReader``, GETs chunk
n+1 after chunk n with this session): each message exactly once and in order. A failed GET or
status poll is retried for ``error_window_s`` (a few minutes) before the job is cancelled.
The job's log is not a message channel: the launcher's banners cut it, SYSTEM$GET_SERVICE_LOGS
keeps only its last 100 KB and, after the container exits, the SDK may read another source that
splits lines differently. Logs serve humans: on failure the
tails of every instance (head and workers) go into the failure. Terminating the Dagster run, the
timeout or any error while following the job cancels it. Nothing here is specific to a payload.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

# Params the payload's writer reads (transcription/pipes_stage.py names the same keys).
STAGE_KEY = "snowflake_stage"
INTERVAL_KEY = "interval_s"
FLUSH_TIMEOUT_KEY = "flush_timeout_s"
NETWORK_TIMEOUT_KEY = "network_timeout_s"
MAX_BACKOFF_KEY = "max_backoff_s"
FAILED_STATES = frozenset({"FAILED", "INTERNAL_ERROR", "CANCELLED", "DELETED"})
TERMINAL_STATES = FAILED_STATES | {"DONE"}
_NO_SUCH_FILE = 253006  # the connector's "the file does not exist" on GET


class PipesMLJobStageMessageReader(dg.PipesBlobStoreMessageReader):
    """Reads the job's message chunks ``<prefix>/<n>.json`` from its stage, in order.

    The base class polls, orders and drains; this class downloads one chunk. A chunk not yet
    written is ``None``; so is a failed download, which is remembered: :meth:`failing_for` tells
    the client how long downloads have failed in a row, and the client decides when to give up.

    Args:
        session: the Snowpark session that GETs the chunks.
        prefix: ``@DB.SCHEMA.STAGE/pipes/<id>``.
        interval_s: seconds between two downloads (and the writer's upload interval).
        writer_options: the writer's ``flush_timeout_s``, ``network_timeout_s``,
            ``max_backoff_s`` (sent with the params; tests scale them down).
    """

    def __init__(
        self,
        session,
        prefix: str,
        interval_s: float = 5.0,
        writer_options: Mapping[str, float] | None = None,
    ):
        super().__init__(interval=interval_s)
        self.session = session
        self.prefix = prefix.rstrip("/")
        self.writer_options = dict(writer_options or {})
        self.messages = 0
        self.last_error: str | None = None
        self._failing_since: float | None = None
        self._closed = threading.Event()
        self._launched = threading.Event()
        self._given_up = threading.Event()
        # one statement at a time on the session: the client's status polls and this reader's
        # thread share it (a file transfer interleaved with another statement can go astray)
        self.session_lock = threading.Lock()

    @contextmanager
    def get_params(self) -> Iterator[dict]:
        yield {STAGE_KEY: self.prefix, INTERVAL_KEY: self.interval, **self.writer_options}

    def on_launched(self, launched_payload) -> None:
        super().on_launched(launched_payload)
        self._launched.set()

    def messages_are_readable(self, params) -> bool:
        return self._launched.is_set()  # not while the SDK uploads the job on the session

    def give_up(self) -> None:
        """The client stopped following the job: no more downloads (Dagster's reader thread
        still runs out its wait after the session, about 10 s, without touching the stage)."""
        self._given_up.set()

    def download_messages_chunk(self, index: int, params) -> str | None:
        if self._given_up.is_set():
            return None
        try:
            with tempfile.TemporaryDirectory(prefix="pipes-chunk-") as tmp:
                try:
                    with self.session_lock:
                        self.session.file.get(f"{self.prefix}/{index}.json", tmp)
                except Exception as exc:
                    if getattr(exc, "errno", None) != _NO_SUCH_FILE:
                        raise
                path = Path(tmp) / f"{index}.json"
                text = path.read_text() if path.is_file() else None
        except Exception as exc:  # a blip is retried at the next interval; the client decides
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            return None
        self._failing_since = None
        if text:
            for line in text.splitlines():
                if line.strip():
                    self.messages += 1
                    if json.loads(line).get("method") == "closed":
                        self._closed.set()
        return text

    def failing_for(self) -> float:
        """Seconds downloads have failed in a row (0 when the last one worked)."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def wait_closed(self, timeout_s: float) -> bool:
        """Wait until the ``closed`` message was downloaded; False when it did not come."""
        return self._closed.wait(timeout_s)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def no_messages_debug_text(self) -> str:
        return (
            f"Attempted to read message chunks from {self.prefix}/<n>.json. Expected the job to "
            "open Dagster Pipes with transcription.pipes_stage.payload_message_writer()."
        )


def _is_pipes_message(line: str) -> bool:
    return line.startswith("{") and '"__dagster_pipes_version"' in line


class PipesSnowflakeMLJobClient(dg.PipesClient):
    """Submits a directory with ``snowflake.ml.jobs.submit_directory`` and follows the job.

    Args:
        poll_interval_s: seconds between status/log polls.
        timeout_s: cancel and fail the job after this long (None: no limit).
        tail_lines: log lines per instance in failure messages.
        message_interval_s: how often the job uploads a chunk of Pipes messages.
        drain_timeout_s: after the job ends, how long to wait for its ``closed`` message (at
            least the writer's final flush, ``flush_timeout_s``).
        error_window_s: how long status polls or chunk downloads may fail in a row (a
            network blip, a throttled endpoint) before the job is cancelled.
        flush_timeout_s, network_timeout_s, max_backoff_s: sent to the job's writer (None: its
            defaults, 120 s, 60 s and 15 s).
        remove_done: remove a job that ended DONE, once its messages are read: its service and
            payload copy (``snowflake.ml.jobs.delete_job``) and its Pipes chunks. Failed jobs
            are kept for their logs (``SnowflakeMLJobCompute.keep_failed_days``).
    """

    def __init__(
        self,
        poll_interval_s: float = 5.0,
        timeout_s: float | None = None,
        tail_lines: int = 60,
        message_interval_s: float = 5.0,
        drain_timeout_s: float = 180.0,
        error_window_s: float = 180.0,
        flush_timeout_s: float | None = None,
        network_timeout_s: float | None = None,
        max_backoff_s: float | None = None,
        remove_done: bool = True,
    ):
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.tail_lines = tail_lines
        self.message_interval_s = message_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.error_window_s = error_window_s
        self.writer_options = {
            key: float(value)
            for key, value in (
                (FLUSH_TIMEOUT_KEY, flush_timeout_s),
                (NETWORK_TIMEOUT_KEY, network_timeout_s),
                (MAX_BACKOFF_KEY, max_backoff_s),
            )
            if value is not None
        }
        self.remove_done = remove_done

    @staticmethod
    def submit_kwargs(
        *,
        dir_path: str,
        compute_pool: str,
        entrypoint: str | list[str],
        stage_name: str,
        env_vars: Mapping[str, str],
        session: Any = None,
        args: Sequence[str] | None = None,
        target_instances: int = 1,
        min_instances: int | None = None,
        pip_requirements: Sequence[str] | None = None,
        external_access_integrations: Sequence[str] | None = None,
        query_warehouse: str | None = None,
        name: str | None = None,
        **extra: Any,
    ) -> dict:
        """Keyword arguments for ``submit_directory`` (tested against its signature)."""
        kwargs: dict[str, Any] = {
            "dir_path": dir_path,
            "compute_pool": compute_pool,
            "entrypoint": entrypoint,
            "stage_name": stage_name,
            "args": list(args) if args else None,
            "target_instances": target_instances,
            "min_instances": min_instances if min_instances is not None else target_instances,
            "pip_requirements": list(pip_requirements) if pip_requirements else None,
            "external_access_integrations": list(external_access_integrations or []) or None,
            "session": session,
            "env_vars": dict(env_vars),
        }
        if query_warehouse:
            kwargs["query_warehouse"] = query_warehouse
        if name:
            kwargs["name"] = name
        kwargs.update(extra)
        return kwargs

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        dir_path: str,
        compute_pool: str,
        entrypoint: str | list[str],
        stage_name: str,
        session: Any = None,
        extras: Mapping[str, Any] | None = None,
        env_vars: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        **submit: Any,
    ) -> dg.PipesClientCompletedInvocation:
        """Submit, follow and return the Pipes results; raises ``dg.Failure`` on failure."""
        from snowflake.ml import jobs

        if session is None:
            from snowflake.snowpark.context import get_active_session

            session = get_active_session()
        prefix = f"@{stage_name.lstrip('@').rstrip('/')}/pipes/{uuid.uuid4().hex}"
        reader = PipesMLJobStageMessageReader(
            session,
            prefix,
            interval_s=self.message_interval_s,
            writer_options=self.writer_options,
        )
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesEnvContextInjector(),
            message_reader=reader,
            extras=extras,
        ) as pipes_session:
            env = dict(env_vars or {}) | dict(pipes_session.get_bootstrap_env_vars())
            kwargs = self.submit_kwargs(
                dir_path=dir_path,
                compute_pool=compute_pool,
                entrypoint=entrypoint,
                stage_name=stage_name,
                env_vars=env,
                session=session,
                **submit,
            )
            job = jobs.submit_directory(**kwargs)
            job_id = str(job.id)
            context.log.info(f"submitted Snowflake ML Job {job_id} to compute pool {compute_pool}")
            pipes_session.report_launched({"extras": {"job_id": job_id}})
            try:
                status = self._follow(context, job, reader, timeout_s)
            except BaseException as exc:
                # an interrupt (run terminated), the timeout or an error while following: a GPU
                # job must not keep running unwatched
                context.log.warning(
                    f"{type(exc).__name__} while following Snowflake ML Job {job_id}: cancelling it"
                )
                reader.give_up()
                with reader.session_lock:
                    _cancel(context, job)
                raise
            if status in FAILED_STATES:
                with reader.session_lock:
                    tail = instance_log_tails(job, self.tail_lines)
                error = _error_lines(tail)
                raise dg.Failure(
                    description=(
                        f"Snowflake ML Job {job_id} ended {status}"
                        + (f": {error}" if error else "")
                        + f"\n--- log tails ---\n{tail}"
                    ),
                    metadata={
                        "snowflake_ml_job_id": job_id,
                        "status": status,
                        "log_tail": dg.MetadataValue.text(tail),
                    },
                )
            if not reader.closed:
                context.log.warning(
                    f"Snowflake ML Job {job_id} ended {status} but its Pipes messages did not end "
                    f"with 'closed' ({reader.messages} message(s) read from {prefix})"
                )
            removable = self.remove_done and status == "DONE" and reader.closed
        if removable:  # every message read and the reader stopped: nothing of it is needed
            remove_job(context, session, job, reader.prefix)
        return dg.PipesClientCompletedInvocation(
            pipes_session,
            metadata={"snowflake_ml_job_id": job_id, "snowflake_ml_job_status": status},
        )

    def _follow(self, context, job, reader: PipesMLJobStageMessageReader, timeout_s) -> str:
        """Poll the job's status until it ends (the reader's thread downloads the messages);
        then wait for the ``closed`` message. Raises when the status or the messages could not
        be read for ``error_window_s``."""
        started = time.monotonic()
        last = None
        status_failing_since = None
        warned = False
        while True:
            try:
                with reader.session_lock:
                    status = str(job.status)
                status_failing_since = None
            except Exception as exc:  # a blip is retried; only a lasting failure cancels
                now = time.monotonic()
                status_failing_since = status_failing_since or now
                if now - status_failing_since > self.error_window_s:
                    raise
                context.log.warning(
                    f"following Snowflake ML Job {job.id}: {type(exc).__name__}: {exc} "
                    f"(failing for {now - status_failing_since:.0f} s of "
                    f"{self.error_window_s:.0f} s allowed, retrying)"
                )
                time.sleep(self.poll_interval_s)
                continue
            failing = reader.failing_for()
            if failing > self.error_window_s:
                raise RuntimeError(
                    f"the Pipes messages of Snowflake ML Job {job.id} could not be read from "
                    f"{reader.prefix} for {failing:.0f} s (last error: {reader.last_error})"
                )
            if failing and not warned:
                context.log.warning(
                    f"reading Pipes messages of Snowflake ML Job {job.id} fails "
                    f"({reader.last_error}); retrying for up to {self.error_window_s:.0f} s"
                )
            warned = bool(failing)
            if status != last:
                context.log.info(f"Snowflake ML Job {job.id}: {status}")
                last = status
            if status in TERMINAL_STATES:
                # the writer's final flush may still be running (bounded by its flush_timeout_s)
                wait = self.drain_timeout_s / (4 if status in FAILED_STATES else 1)
                reader.wait_closed(wait)
                return status
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                with reader.session_lock:
                    _cancel(context, job)
                with reader.session_lock:
                    tail = instance_log_tails(job, self.tail_lines)
                raise dg.Failure(
                    description=(
                        f"Snowflake ML Job {job.id} did not finish within {timeout_s:.0f} s and "
                        f"was cancelled\n--- log tails ---\n{tail}"
                    ),
                    metadata={
                        "snowflake_ml_job_id": str(job.id),
                        "status": "TIMEOUT",
                        "log_tail": dg.MetadataValue.text(tail),
                    },
                )
            time.sleep(self.poll_interval_s)


def instance_log_tails(job, lines: int = 60) -> str:
    """The last ``lines`` of every instance's log (head first): a worker's failure shows too."""
    try:
        count = int(job.target_instances)
    except Exception:
        count = 1
    parts = []
    for index in range(max(1, count)):
        try:
            text = job.get_logs(limit=lines, instance_id=index, verbose=True)
        except Exception as exc:
            text = f"(logs unavailable: {type(exc).__name__}: {exc})"
        body = "\n".join(line for line in str(text).splitlines() if not _is_pipes_message(line))
        parts.append(f"[instance {index}{' (head)' if index == 0 else ''}]\n{body.strip()}")
    return "\n".join(parts)


_ERROR_LINE = re.compile(r"(Error|Exception|Traceback|Killed|OOM|FATAL)", re.I)


def _error_lines(tail: str, limit: int = 3) -> str:
    """The last lines naming an error, with their instance, for the failure's first line."""
    found, instance = [], "instance 0"
    for line in tail.splitlines():
        if line.startswith("[instance "):
            instance = line.strip("[]").split(" (")[0]
        elif _ERROR_LINE.search(line) and not line.startswith("Traceback"):
            found.append(f"{instance}: {line.strip()}")
    return "; ".join(found[-limit:])


def remove_job(context, session, job, pipes_prefix: str | None = None) -> None:
    """A finished job's service and payload copy (the SDK's ``delete_job``: ``REMOVE`` of its
    stage folder, ``DROP SERVICE``) and its Pipes chunks; a failure here is only logged."""
    from snowflake.ml import jobs

    try:
        jobs.delete_job(job, session=session)
        if pipes_prefix:
            session.sql(f"REMOVE {pipes_prefix.rstrip('/')}/").collect()
        context.log.info(f"removed Snowflake ML Job {job.id}, its payload copy and Pipes chunks")
    except Exception as exc:
        context.log.warning(f"removing Snowflake ML Job {job.id} failed: {exc}")


def _cancel(context, job) -> None:
    try:
        job.cancel()
    except Exception as exc:
        context.log.error(f"cancelling Snowflake ML Job {job.id} failed: {exc}")
