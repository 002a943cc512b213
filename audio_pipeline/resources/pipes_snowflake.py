"""``PipesSnowflakeMLJobClient``: run a directory as a Snowflake ML Job under Dagster Pipes.

The context goes to the job in its environment (``PipesEnvContextInjector``). Messages come
back as chunks on the job's stage (``transcription/pipes_stage.py`` writes them with the job's
session; :class:`PipesMLJobStageMessageReader` reads chunk n+1 after chunk n with this session):
each message exactly once and in order. The job's log is not a message channel: the launcher's
banners cut it, SYSTEM$GET_SERVICE_LOGS keeps only its last 100 KB and, after the container exits,
the SDK may read another source that splits lines differently. Logs serve humans: on failure the
tails of every instance (head and workers) go into the failure. Terminating the Dagster run, the
timeout or any error while following the job cancels it. Nothing here is specific to a payload.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import PipesClientCompletedInvocation, PipesEnvContextInjector, PipesMessageReader

STAGE_KEY = "snowflake_stage"  # what transcription/pipes_stage.py looks for
INTERVAL_KEY = "interval_s"
FAILED_STATES = frozenset({"FAILED", "INTERNAL_ERROR", "CANCELLED", "DELETED"})
TERMINAL_STATES = FAILED_STATES | {"DONE"}


class PipesMLJobStageMessageReader(PipesMessageReader):
    """Reads the job's message chunks ``<prefix>/<n>.json`` from its stage, in order.

    ``poll()`` handles every chunk that is complete on the stage, never one twice, never out of
    order (chunk n+1 waits for chunk n); ``drain()`` polls after the job ended until the
    ``closed`` message arrived or ``drain_timeout_s`` passed (stage listings can lag).
    """

    def __init__(
        self, session, prefix: str, interval_s: float = 5.0, drain_timeout_s: float = 60.0
    ):
        self.session = session
        self.prefix = prefix.rstrip("/")
        self.interval_s = interval_s
        self.drain_timeout_s = drain_timeout_s
        self.counter = 1
        self.messages = 0
        self._handler = None
        self._closed = False

    @contextmanager
    def read_messages(self, handler) -> Iterator[dict]:
        self._handler = handler
        try:
            yield {STAGE_KEY: self.prefix, INTERVAL_KEY: self.interval_s}
        finally:
            self._handler = None

    def _present(self) -> set[int]:
        rows = self.session.sql(f"LIST {self.prefix}/").collect()
        found = set()
        for row in rows:
            m = re.search(r"/(\d+)\.json$", str(row[0]))
            if m:
                found.add(int(m.group(1)))
        return found

    def _download(self, index: int) -> str:
        with tempfile.TemporaryDirectory(prefix="pipes-chunk-") as tmp:
            self.session.file.get(f"{self.prefix}/{index}.json", tmp)
            return (Path(tmp) / f"{index}.json").read_text()

    def poll(self) -> int:
        """Handle the chunks now on the stage; returns how many messages were handled."""
        present = self._present()
        handled = 0
        while self.counter in present:
            chunk = self._download(self.counter)
            for line in chunk.splitlines():
                if not line.strip():
                    continue
                message = json.loads(line)
                if self._handler is not None:
                    self._handler.handle_message(message)
                handled += 1
                if message.get("method") == "closed":
                    self._closed = True
            self.counter += 1
        self.messages += handled
        return handled

    def drain(self, job_failed: bool = False) -> bool:
        """Poll until the closed message arrived; False when it never did."""
        deadline = time.monotonic() + (
            self.drain_timeout_s / 4 if job_failed else self.drain_timeout_s
        )
        while True:
            self.poll()
            if self._closed or time.monotonic() > deadline:
                return self._closed
            time.sleep(min(1.0, self.interval_s))

    @property
    def closed(self) -> bool:
        return self._closed

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
        drain_timeout_s: after the job ends, how long to wait for its last chunk.
        max_poll_errors: consecutive failed polls tolerated; one more cancels the job.
    """

    def __init__(
        self,
        poll_interval_s: float = 5.0,
        timeout_s: float | None = None,
        tail_lines: int = 60,
        message_interval_s: float = 5.0,
        drain_timeout_s: float = 60.0,
        max_poll_errors: int = 3,
    ):
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.tail_lines = tail_lines
        self.message_interval_s = message_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.max_poll_errors = max_poll_errors

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

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
    ) -> PipesClientCompletedInvocation:
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
            drain_timeout_s=self.drain_timeout_s,
        )
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        with dg.open_pipes_session(
            context=context,
            context_injector=PipesEnvContextInjector(),
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
                _cancel(context, job)
                raise
            if status in FAILED_STATES:
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
        return PipesClientCompletedInvocation(
            pipes_session,
            metadata={"snowflake_ml_job_id": job_id, "snowflake_ml_job_status": status},
        )

    def _follow(self, context, job, reader: PipesMLJobStageMessageReader, timeout_s) -> str:
        started = time.monotonic()
        last = None
        errors = 0
        while True:
            try:
                status = str(job.status)
                if status not in TERMINAL_STATES:
                    reader.poll()
                errors = 0
            except Exception as exc:  # a network blip is retried; a lasting error cancels
                errors += 1
                if errors > self.max_poll_errors:
                    raise
                context.log.warning(
                    f"following Snowflake ML Job {job.id}: {type(exc).__name__}: {exc} "
                    f"(attempt {errors} of {self.max_poll_errors}, retrying)"
                )
                time.sleep(self.poll_interval_s)
                continue
            if status != last:
                context.log.info(f"Snowflake ML Job {job.id}: {status}")
                last = status
            if status in TERMINAL_STATES:
                reader.drain(job_failed=status in FAILED_STATES)
                return status
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                _cancel(context, job)
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


def _cancel(context, job) -> None:
    try:
        job.cancel()
    except Exception as exc:
        context.log.error(f"cancelling Snowflake ML Job {job.id} failed: {exc}")
