"""Helpers shared by the tests (fixtures stay in conftest.py): resources, corpora, staging,
sensor ticks, Snowflake connections to fakesnow or the emulated account."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import dagster as dg
from dagster_snowflake import SnowflakeResource

from audio_pipeline.definitions import ASSETS
from audio_pipeline.partitions import transcript_batches
from audio_pipeline.profiles import LocalSettings, local_resources
from audio_pipeline.resources.compute.ray_head import free_port
from audio_pipeline.resources.librispeech_source import LibriSpeechSource
from audio_pipeline.resources.snowflake_connection import SnowflakeConnection
from audio_pipeline.sensors import NewFilesSettings, build_new_stage_files_sensor
from audio_pipeline.transcription import snowflake_sql
from audio_pipeline.transcription.librispeech import BUNDLED_ROOT
from tools.dagster_dev import DagsterDev, dagster_dev, graphql, wait_for  # noqa: F401

__all__ = ["free_port"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_TREE = BUNDLED_ROOT / "sample"
# Real speech (CC BY 4.0) beside the repository: ../shared/data/realspeech
MIRROR = REPO_ROOT.parent / "shared" / "data" / "realspeech"
REALSPEECH = MIRROR / "LibriSpeech" / "dev-real"
# Virtual environments a test builds once and keeps for the next session (outside the repository:
# the README test finds no new file in it while other tests run beside it).
TEST_ENVS = Path(
    os.environ.get("AUDIO_PIPELINE_TEST_CACHE", Path.home() / ".cache" / "audio_pipeline")
)
# The system's temp dir, before the session moved TMPDIR (conftest): the README test runs
# `make demo` with it and measures it, while other tests run beside it (xdist workers).
SYSTEM_TMPDIR = "AUDIO_PIPELINE_TESTS_SYSTEM_TMPDIR"
# uv's cache for the test virtualenvs and for the runtime environments uv builds on test heads
UV_CACHE = TEST_ENVS / "uv-cache"


def build_venv(
    venv: Path, packages: list[str], timeout_s: float = 900
) -> subprocess.CompletedProcess:
    """A virtual environment of this Python at ``venv`` with ``packages`` (and pip), installed by
    uv (a dev requirement) from PyPI: seconds on a fresh machine where pip took a minute. Its
    cache is kept beside the environments. Returns the install's completed process."""
    from uv import find_uv_bin

    uv = find_uv_bin()
    env = {**os.environ, "UV_CACHE_DIR": str(UV_CACHE)}
    subprocess.run(
        [uv, "venv", "-q", "--seed", "--clear", "--python", sys.executable, str(venv)],
        check=True,
        env=env,
    )
    return subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *packages],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )


# What a user must never see from a healthy run (the demo's terminal or its log).
NOISE = (
    "constructor arguments in the object store",
    "Progress bars disabled",
    "PreviewWarning",
    "BetaWarning",
    "Traceback",
)
SECRET = "pl4nted-Sekret-9f3b"  # planted as the password: must appear in no log or metadata

_counter = itertools.count()


def make_resources(home: Path, ray_compute=None, mirror: str = "unused://", md5=None) -> dict:
    settings = LocalSettings(
        home=home, mirror=mirror, ray_address=None, gcs_port=0, dashboard_port=0
    )
    res = local_resources(settings)
    if ray_compute is not None:
        res["compute"] = ray_compute
    res["librispeech_source"] = LibriSpeechSource(
        mirror=mirror, work_dir=str(home / "librispeech"), md5_override=md5, progress=False
    )
    return res


def make_subset_tarball(
    dest: Path,
    subset: str,
    n_chapters: int | None = None,
    extra_members: dict[str, bytes] | None = None,
) -> str:
    """Pack the bundled sample corpus as ``LibriSpeech/<subset>/...`` in a tar.gz; returns md5."""
    chapters = sorted(p for p in SAMPLE_TREE.glob("*/*") if p.is_dir())[:n_chapters]
    with tarfile.open(dest, "w:gz") as tar:
        for chapter in chapters:
            rel = chapter.relative_to(SAMPLE_TREE)
            tar.add(chapter, arcname=f"LibriSpeech/{subset}/{rel}")
        for name, data in (extra_members or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(dest.read_bytes()).hexdigest()


ODD = ["with space", "quote'\"s", "semi;colon", "ünïcødé-日本", "-leading-dash"]


def stage_sample(home, odd_names=False, short_only=False):
    """The sample's 22 files (2.3 min) under ``stage/drop``; ``short_only``: the 21 under 6 s
    (1.6 min; the 45 s one, cut into pieces, is left out)."""
    stage = home / "stage" / "drop"
    stage.mkdir(parents=True)
    flacs = sorted(SAMPLE_TREE.glob("*/*/*.flac"))
    if short_only:
        flacs = [f for f in flacs if f.stat().st_size < 200_000]
    for i, flac in enumerate(flacs):
        name = f"{ODD[i]} {flac.name}" if odd_names and i < len(ODD) else flac.name
        shutil.copyfile(flac, stage / name)


def sensor_batches(res, instance, cap):
    res["new_files"] = NewFilesSettings(min_age_s=0, max_files_per_batch=cap)
    ctx = dg.build_sensor_context(instance=instance, resources=res)
    result = build_new_stage_files_sensor()(ctx)
    keys = [r.partition_key for r in result.run_requests]
    instance.add_dynamic_partitions(transcript_batches.name, keys)
    return keys


def start_transcription(res, instance, key):
    """Materialize ``transcripts[key]`` in a thread; small blocks, the slower engine, so that
    a test can interfere while rows are still being written."""
    outcome = {}

    def run():
        outcome["result"] = dg.materialize(
            ASSETS,
            selection=["transcripts"],
            partition_key=key,
            resources=res,
            instance=instance,
            raise_on_error=False,
            run_config={
                "ops": {"transcripts": {"config": {"batch_size": 4, "engine": "transformers"}}}
            },
        )

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


# ------------------------------------------------------------------ Snowflake
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


# ------------------------------------------------------------------ runs and ticks
def materialize(
    selection: str, resources: dict, instance, partition_key=None, config=None, tags=None,
    assets=None,
):  # fmt: skip
    """``dg.materialize`` of one asset (default: the project's assets) with its op config."""
    run_config = {"ops": {selection: {"config": config}}} if config else None
    return dg.materialize(
        assets or ASSETS,
        selection=[selection],
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        run_config=run_config,
        tags=tags,
        raise_on_error=False,
    )


def metadata(result, node: str, partition: str | None = None) -> dict:
    """The plain values of ``node``'s last materialization in ``result`` (of ``partition``: a
    run over several partitions reports them in no set order)."""
    found = [
        m
        for m in result.asset_materializations_for_node(node)
        if partition is None or m.partition == partition
    ]
    return {k: v.value for k, v in found[-1].metadata.items()}


def tick(res: dict, instance, cursor=None, sensor=None, add_partitions: bool = True):
    """One tick of the new-file sensor, as the daemon runs it (its partitions added after)."""
    sensor = sensor or build_new_stage_files_sensor()
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res) as context:
        result = sensor(context)
    if add_partitions and result.run_requests:
        keys = [r.partition_key for r in result.run_requests]
        instance.add_dynamic_partitions(transcript_batches.name, keys)
    return result


def container_env(account, connection, token_file: Path) -> dict[str, str]:
    """The variables SPCS gives a container (its OAuth token in ``token_file``), pointing at the
    emulated ``account`` and ``connection``'s schema: the payload's own connections use them."""
    return {
        "SNOWFLAKE_ACCOUNT": "EMULATED",
        "SNOWFLAKE_HOST": "127.0.0.1",
        "SNOWFLAKE_PORT": str(account.port),
        "SNOWFLAKE_PROTOCOL": "http",
        "SNOWFLAKE_DATABASE": connection.database,
        "SNOWFLAKE_SCHEMA": connection.schema_name,
        "SNOWFLAKE_TOKEN_FILE": str(token_file),
    }


class FakeHub:
    """A stand-in for the Hugging Face Hub on 127.0.0.1 (point ``HF_ENDPOINT`` at ``url``):
    serves model directories for ``huggingface_hub.snapshot_download`` (the repository tree,
    then HEAD and GET of each file) and records every request, to count downloads."""

    def __init__(self, repos: dict[str, tuple[str, Path]]):  # repo id -> (revision, directory)
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body: bool):
                hub.requests.append((self.command, self.path))
                path = self.path.split("?")[0]
                for repo, (revision, root) in hub.repos.items():
                    if path == f"/api/models/{repo}/tree/{revision}":
                        files = [p for p in sorted(root.rglob("*")) if p.is_file()]
                        tree = [
                            {
                                "type": "file",
                                "path": p.relative_to(root).as_posix(),
                                "size": p.stat().st_size,
                                "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                            }
                            for p in files
                        ]
                        return self.send(200, json.dumps(tree).encode(), body)
                    resolve = f"/{repo}/resolve/{revision}/"
                    if path.startswith(resolve) and (root / path[len(resolve) :]).is_file():
                        data = (root / path[len(resolve) :]).read_bytes()
                        etag = hashlib.sha256(data).hexdigest()
                        headers = {"X-Repo-Commit": revision, "ETag": f'"{etag}"'}
                        return self.send(200, data, body, headers)
                self.send(404, b"", body, {"X-Error-Code": "EntryNotFound"})

            def send(self, code: int, data: bytes, body: bool, headers: dict | None = None):
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def file_downloads(self) -> list[str]:
        return [p for method, p in self.requests if method == "GET" and "/resolve/" in p]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def faster_whisper_alone(tree: Path) -> dict[str, tuple[str, str]]:
    """utterance id -> (reference, text) from faster-whisper's own loop on bundled tiny.en (int8,
    greedy): the yardstick the pipeline's accuracy on real speech is held to."""
    from faster_whisper import WhisperModel

    from audio_pipeline.transcription import librispeech
    from audio_pipeline.transcription.models import resolve_model

    refs = {utt: text for utt, _, text in librispeech.iter_references(tree)}
    model = WhisperModel(
        resolve_model("bundled:tiny.en", "ctranslate2", None).path,
        device="cpu",
        compute_type="int8",
        cpu_threads=os.cpu_count() or 1,
    )
    out = {}
    for utt in librispeech.iter_utterances(tree):
        segments, _ = model.transcribe(str(utt.audio), beam_size=1, language="en")
        out[utt.utterance_id] = (refs[utt.utterance_id], " ".join(s.text.strip() for s in segments))
    return out


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listening_addresses(pid: int) -> list:
    """The (ip, port) addresses that a process and its descendants listen on."""
    import psutil

    root = psutil.Process(pid)
    listening = []
    for p in [root, *root.children(recursive=True)]:
        try:  # a Ray worker of the tree may exit between the listing and this read
            conns = p.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        listening += [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    return listening
