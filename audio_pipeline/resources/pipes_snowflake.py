"""``PipesSnowflakeMLJobClient``: run a directory as a Snowflake ML Job under Dagster Pipes.

The context goes to the job in its environment (``PipesEnvContextInjector``); the job's
``dagster_pipes`` writes messages as JSON lines on stdout, and this client reads them back from
``MLJob.get_logs()`` while the job runs, forwarding each new line once: Pipes messages to Dagster,
other lines to stdout (the step's compute log). Terminal failure states fail the step with the log
tail; terminating the Dagster run, or the timeout, cancels the job. Nothing here is specific to
any one payload.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.pipes.client import PipesClientCompletedInvocation, PipesMessageReader
from dagster._core.pipes.utils import PipesEnvContextInjector, extract_message_or_forward_to_stdout
from dagster_pipes import PipesDefaultMessageWriter

FAILED_STATES = frozenset({"FAILED", "INTERNAL_ERROR", "CANCELLED", "DELETED"})
TERMINAL_STATES = FAILED_STATES | {"DONE"}


class PipesMLJobLogMessageReader(PipesMessageReader):
    """Reads Pipes messages from an ML Job's log; the job's writer prints them on stdout."""

    def __init__(self, tail_lines: int = 60):
        self._handler = None
        self._consumed = 0
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)

    @contextmanager
    def read_messages(self, handler) -> Iterator[dict]:
        self._handler = handler
        try:
            yield {PipesDefaultMessageWriter.STDIO_KEY: PipesDefaultMessageWriter.STDOUT}
        finally:
            self._handler = None

    def consume(self, log_text: str, final: bool = False) -> int:
        """Handle the lines of ``log_text`` not seen before; returns how many were new.

        ``log_text`` is the whole log so far. Until ``final``, an unterminated last line is held
        back: it may still be being written.
        """
        lines = log_text.splitlines()
        if not final and log_text and not log_text.endswith("\n"):
            lines = lines[:-1]
        new = lines[self._consumed :]
        for line in new:
            if self._handler is not None:
                extract_message_or_forward_to_stdout(self._handler, line)
            if line.strip() and not _is_pipes_message(line):
                self._tail.append(line)
        self._consumed += len(new)
        return len(new)

    @property
    def tail(self) -> str:
        return "\n".join(self._tail)

    def no_messages_debug_text(self) -> str:
        return (
            "Attempted to read messages from the ML Job's logs (MLJob.get_logs). Expected the job "
            "to call open_dagster_pipes() with the default message writer (stdout)."
        )


def _is_pipes_message(line: str) -> bool:
    return line.startswith("{") and '"__dagster_pipes_version"' in line


class PipesSnowflakeMLJobClient(dg.PipesClient):
    """Submits a directory with ``snowflake.ml.jobs.submit_directory`` and follows the job.

    Args:
        poll_interval_s: seconds between status/log polls.
        timeout_s: cancel and fail the job after this long (None: no limit).
        tail_lines: log lines kept for failure messages.
    """

    def __init__(
        self,
        poll_interval_s: float = 5.0,
        timeout_s: float | None = None,
        tail_lines: int = 60,
    ):
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.tail_lines = tail_lines

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

        reader = PipesMLJobLogMessageReader(tail_lines=self.tail_lines)
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
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                context.log.warning(f"run interrupted: cancelling Snowflake ML Job {job_id}")
                _cancel(context, job)
                raise
            if status in FAILED_STATES:
                raise dg.Failure(
                    description=(
                        f"Snowflake ML Job {job_id} ended {status}\n--- log tail ---\n{reader.tail}"
                    ),
                    metadata={
                        "snowflake_ml_job_id": job_id,
                        "status": status,
                        "log_tail": dg.MetadataValue.text(reader.tail),
                    },
                )
        return PipesClientCompletedInvocation(
            pipes_session,
            metadata={"snowflake_ml_job_id": job_id, "snowflake_ml_job_status": status},
        )

    def _follow(self, context, job, reader: PipesMLJobLogMessageReader, timeout_s) -> str:
        started = time.monotonic()
        last = None
        while True:
            status = str(job.status)
            if status != last:
                context.log.info(f"Snowflake ML Job {job.id}: {status}")
                last = status
            final = status in TERMINAL_STATES
            _read_logs(context, job, reader, final)
            if final:
                return status
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                _cancel(context, job)
                _read_logs(context, job, reader, True)
                raise dg.Failure(
                    description=(
                        f"Snowflake ML Job {job.id} did not finish within {timeout_s:.0f} s and "
                        f"was cancelled\n--- log tail ---\n{reader.tail}"
                    ),
                    metadata={
                        "snowflake_ml_job_id": str(job.id),
                        "status": "TIMEOUT",
                        "log_tail": dg.MetadataValue.text(reader.tail),
                    },
                )
            time.sleep(self.poll_interval_s)


def _read_logs(context, job, reader: PipesMLJobLogMessageReader, final: bool) -> None:
    try:
        text = job.get_logs(as_list=False)
    except Exception as exc:  # logs may not exist yet (PENDING container)
        if final:
            context.log.warning(f"could not read the logs of ML Job {job.id}: {type(exc).__name__}")
        return
    reader.consume(text or "", final=final)


def _cancel(context, job) -> None:
    try:
        job.cancel()
    except Exception as exc:
        context.log.error(f"cancelling Snowflake ML Job {job.id} failed: {exc}")
