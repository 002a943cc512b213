"""Snowflake fixtures: one fakesnow server for the session, real connector and SnowflakeResource.

fakesnow (0.12) serves Snowflake's HTTP protocol on 127.0.0.1 and runs the SQL on DuckDB. It
supports PUT and LIST on stages but not DIRECTORY(), GET, REMOVE or compute pools.
"""

from __future__ import annotations

import itertools
import logging

import pytest
from dagster_snowflake import SnowflakeResource

from audio_pipeline import snowflake_sql
from audio_pipeline.resources.snowflake_connection import SnowflakeConnection

SECRET = "pl4nted-Sekret-9f3b"  # planted as the password: must appear in no log or metadata

_counter = itertools.count()


@pytest.fixture(scope="session")
def fakesnow_server():
    """Connection kwargs of a fakesnow server started for this test session."""
    import fakesnow

    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    with fakesnow.server() as kwargs:
        yield kwargs


def fake_resource(server: dict, password: str = SECRET) -> SnowflakeResource:
    extra = {k: server[k] for k in ("host", "port", "protocol", "session_parameters")}
    return SnowflakeResource(
        account=server["account"],
        user=server["user"],
        password=password,
        network_timeout=5,
        additional_snowflake_connection_args=extra,
    )


def create_schema(connection: SnowflakeConnection) -> None:
    with connection.connect(use_schema=False) as conn:
        cur = conn.cursor()
        snowflake_sql.execute(cur, "create_database", database=connection.database)
        snowflake_sql.execute(cur, "create_schema", schema=connection.schema_fqn)


@pytest.fixture
def sf_connection(fakesnow_server) -> SnowflakeConnection:
    """A connection to a fresh database (own name per test) on the session's fakesnow server."""
    connection = SnowflakeConnection(
        resource=fake_resource(fakesnow_server),
        database=f"TESTDB_{next(_counter)}",
        schema_name="AUDIO_TRANSCRIPTION_SCH",
    )
    create_schema(connection)
    return connection


class RecordingCursor:
    """Records (sql, params); answers scripted rows for statements fakesnow cannot run.

    ``answers`` maps a statement prefix to ``(column_names, rows)``; a list of those is served
    one per matching call (the last one repeats).
    """

    def __init__(self, answers: dict | None = None):
        self.calls: list[tuple[str, object]] = []
        self.answers = {
            k: list(v) if isinstance(v, list) else [v] for k, v in (answers or {}).items()
        }
        self._result: tuple[list[str], list[tuple]] = ([], [])

    def execute(self, sql, params=None):
        self.calls.append((sql, params))
        self._result = ([], [])
        for prefix, queue in self.answers.items():
            if sql.startswith(prefix):
                self._result = queue.pop(0) if len(queue) > 1 else queue[0]
                break
        return self

    def fetchall(self):
        return list(self._result[1])

    @property
    def description(self):
        return [(name,) for name in self._result[0]]


class RecordingConnection:
    def __init__(self, cursor: RecordingCursor):
        self._cursor = cursor

    def cursor(self):
        return self._cursor


class FakeMLJob:
    """Stand-in for ``snowflake.ml.jobs.MLJob``: the job is a local subprocess.

    ``status`` follows the process (RUNNING, DONE, FAILED; CANCELLING/CANCELLED after
    ``cancel()``) and ``get_logs()`` serves the process's captured stdout and stderr.
    """

    def __init__(self, job_id: str, proc, log_path):
        self.id = job_id
        self._proc = proc
        self._log_path = log_path
        self.cancel_calls = 0
        self.status_calls = 0

    @property
    def status(self) -> str:
        self.status_calls += 1
        rc = self._proc.poll()
        if self.cancel_calls:
            return "CANCELLED" if rc is not None else "CANCELLING"
        if rc is None:
            return "RUNNING"
        return "DONE" if rc == 0 else "FAILED"

    def get_logs(self, limit=-1, instance_id=None, *, as_list=False, verbose=True):
        text = self._log_path.read_text(errors="replace") if self._log_path.exists() else ""
        lines = text.splitlines()
        if limit and limit > 0:
            lines = lines[-limit:]
            text = "\n".join(lines) + "\n"
        return lines if as_list else text

    def cancel(self) -> None:
        self.cancel_calls += 1
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=30)

    def wait(self, timeout: float = -1) -> str:
        self._proc.wait(timeout=None if timeout < 0 else timeout)
        return self.status


class FakeMLJobs:
    """Stand-in for ``snowflake.ml.jobs.submit_directory`` (the SDK boundary, nothing else).

    Runs the submitted directory's entry point with the job's ``args`` in a subprocess, in a
    scratch working directory, with only the ``env_vars`` the client sent plus what the platform
    itself provides (``SNOWFLAKE_JOBS_COUNT``, and ``platform_env`` such as ``RAY_ADDRESS``).
    """

    def __init__(self, workdir):
        self.workdir = workdir
        self.submissions: list[dict] = []
        self.jobs: list[FakeMLJob] = []
        self.platform_env: dict[str, str] = {}

    def submit_directory(
        self,
        dir_path,
        compute_pool,
        *,
        entrypoint,
        stage_name,
        args=None,
        target_instances=1,
        pip_requirements=None,
        external_access_integrations=None,
        session=None,
        **kwargs,
    ):
        import inspect
        import os
        import subprocess
        import sys
        from pathlib import Path

        call = dict(
            dir_path=dir_path,
            compute_pool=compute_pool,
            entrypoint=entrypoint,
            stage_name=stage_name,
            args=args,
            target_instances=target_instances,
            pip_requirements=pip_requirements,
            external_access_integrations=external_access_integrations,
            session=session,
            **kwargs,
        )
        inspect.signature(_REAL_SUBMIT).bind(**call)  # what the real SDK would accept
        self.submissions.append(call)
        n = len(self.submissions)
        log_path = Path(self.workdir) / f"job-{n}.log"
        cwd = Path(self.workdir) / f"job-{n}"
        cwd.mkdir(parents=True)
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        env |= {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        env |= dict(kwargs.get("env_vars") or {})
        env |= {"SNOWFLAKE_JOBS_COUNT": str(target_instances)} | self.platform_env
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(Path(dir_path) / entrypoint), *(args or [])],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        job = FakeMLJob(f"DB.SCH.{kwargs.get('name') or 'JOB'}_{n}", proc, log_path)
        self.jobs.append(job)
        return job

    def close(self) -> None:
        for job in self.jobs:
            if job._proc.poll() is None:
                job._proc.kill()
                job._proc.wait()


_REAL_SUBMIT = None


@pytest.fixture
def fake_ml_jobs(monkeypatch, tmp_path):
    global _REAL_SUBMIT
    import snowflake.ml.jobs

    _REAL_SUBMIT = snowflake.ml.jobs.submit_directory
    fake = FakeMLJobs(tmp_path / "jobs")
    monkeypatch.setattr(snowflake.ml.jobs, "submit_directory", fake.submit_directory)
    yield fake
    fake.close()


# ------------------------------------------------------------------ the emulated account
@pytest.fixture(scope="session")
def emulated_account(tmp_path_factory, job_cluster):
    """One emulated account for the session (see emulator.py): jobs attach to ``job_cluster``."""
    from .emulator import EmulatedAccount

    account = EmulatedAccount(
        tmp_path_factory.mktemp("account"),
        ray_address=job_cluster["address"],
        worker_logs=job_cluster.get("worker_logs"),
        pending_s=0.5,
    )
    account.start()
    yield account
    account.stop()


@pytest.fixture(scope="session")
def job_cluster(multinode_ray) -> dict:
    """The shared multi-node Ray cluster (head + two worker raylets, one joining late) that
    emulated jobs run on: instance i > 0 of a job is worker raylet i, whose log it shows."""
    head = multinode_ray.head
    worker_logs = [head.state_dir / f"worker-{head.dashboard_port}-{n}.log" for n in (1, 2)]
    return {
        "address": f"127.0.0.1:{head.gcs_port}",
        "cluster": multinode_ray,
        "worker_logs": worker_logs,
    }


def account_connection(account, **kw) -> SnowflakeConnection:
    """A connection to a fresh database on the emulated account, set up by the real setup plan
    (stages, tables, compute pools, network rule, integration, grants) as `make
    snowflake-setup` runs it."""
    from audio_pipeline import snowflake_setup
    from audio_pipeline.resources.compute import SnowflakeMLJobCompute

    connection = SnowflakeConnection(
        resource=fake_resource(account.connection_kwargs()),
        database=f"ACCT_{next(_counter)}",
        schema_name="AUDIO_TRANSCRIPTION_SCH",
        warehouse="ML_MODEL_WH",
    )
    compute = SnowflakeMLJobCompute(connection=connection, **kw)
    steps = snowflake_setup.setup_plan(connection, compute, job_role="SYSADMIN")
    with connection.connect(use_schema=False) as conn:
        snowflake_setup.run_plan(conn.cursor(), steps, echo=lambda _m: None)
    return connection


@pytest.fixture
def acct_connection(emulated_account) -> SnowflakeConnection:
    return account_connection(emulated_account)
