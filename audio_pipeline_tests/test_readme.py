"""Every command of the README's local code blocks, run as written (the Snowflake blocks need an
account; ``make snowflake-rehearsal`` runs that path offline), and what they leave behind.

A command found in the README must be listed below, in ``RUN`` (with what its output must show)
or in ``NOT_RUN`` (with why); a new or changed command fails this test until it is, so a README
command cannot break unseen. The commands run through ``bash`` from the repository root, as a
reader would type them, in a fresh ``AUDIO_PIPELINE_HOME``; the first ``make demo`` starts the
project's own Ray head (on free ports, ``AUDIO_PIPELINE_RAY_PORT``), as on a fresh machine.

The same session then checks what a user sees (progress, the Ray job's link, nothing logged at
error level, no noise), runs ``make demo`` once more with ``DEBUG=1`` (nothing left to do) and
``make stop``: nothing is left outside the project's home, and /tmp is back to its size (Ray's
temp dir goes with its head; no runtime environment copies the virtualenv). Last, the dev-real
demo's accuracy: its word error rate on the 51 real utterances is within 0.3 points of
faster-whisper's own loop on the same model (the demo is the pipeline run this is measured on).
"""

import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from .helpers import (
    MIRROR,
    NOISE,
    REALSPEECH,
    REPO_ROOT,
    SYSTEM_TMPDIR,
    faster_whisper_alone,
    free_port,
)

README = REPO_ROOT / "README.md"

# command -> what its output must show, in this order (compared as ``normalized`` reads them)
RUN = {
    "make demo": ["[3/3] transcripts[", "ok / error         22 / 0"],
    "LIBRISPEECH_MIRROR=../shared/data/realspeech make demo SUBSET=dev-real": [
        "[1/3] librispeech_audio[dev-real]",
        "ok / error         51 / 0",
    ],
    ".venv/bin/python -m audio_pipeline.cli query 'SELECT t.file_path, t.status, t.text, r.text "
    "AS reference FROM transcripts t LEFT JOIN reference_transcripts r USING (file_path) "
    "LIMIT 5'": ["reference", " ok "],
}
NOT_RUN = {
    "make test": "this suite itself",
    "LIBRISPEECH_MIRROR=/data make demo SUBSET=test-other": "needs LibriSpeech test-other at "
    "/data; the same form runs above on the real-speech mirror",
}


RAY_AGENT_DEFAULT_PORT = 52365  # ray start --dashboard-agent-listen-port's default


def _hold(port: int) -> socket.socket | None:
    """A listening socket on 127.0.0.1:``port``; None when something else holds it already."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    sock.listen()
    return sock


def normalized(command: str) -> str:
    """The command as the shell reads it: comments dropped, whitespace inside words collapsed."""
    words = shlex.split(command.replace("\\\n", " "), comments=True)
    return shlex.join(" ".join(w.split()) for w in words)


def readme_commands(text: str) -> list[str]:
    """The commands of the README's ```bash blocks that do not mention Snowflake, as written
    (continuation lines and multi-line quotes included)."""
    commands = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
        if lang != "bash" or "snowflake" in body.lower():
            continue
        pending = ""
        for line in body.splitlines():
            pending += ("\n" if pending else "") + line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            if pending.endswith("\\"):
                continue
            if words:
                commands.append(pending)
            pending = ""
    return commands


def test_every_readme_command_is_run_or_says_why_not():
    found = {normalized(c) for c in readme_commands(README.read_text())}
    listed = {normalized(c) for c in [*RUN, *NOT_RUN]}
    assert found == listed, "README commands changed: list each in RUN or NOT_RUN of this test"


def _size(root: Path, skip: set[Path]) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda _e: None):
        if Path(dirpath) in skip:
            dirnames[:] = []
            continue
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _repo_files() -> set[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    # not counted: bytecode, and the UI test's screenshots (it may run beside this test)
    return {
        line
        for line in out.stdout.splitlines()
        if "__pycache__" not in line and not line[3:].startswith("artifacts/")
    }


def _run(command: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["bash", "-c", command], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def assert_healthy_demo(proc: subprocess.CompletedProcess, home: Path, dashboard: str) -> None:
    """What a user sees of a healthy first demo: the payload's progress as a bar, the link to
    the Ray job, no Dagster console log; the job's own output went to demo.log, without noise."""
    assert proc.stderr == "", proc.stderr[-3000:]
    assert "transcribing: 100%" in proc.stdout and "22/22" in proc.stdout
    assert f"{dashboard}/#/jobs/transcripts-" in proc.stdout
    assert " - INFO - " not in proc.stdout and "[pipes]" not in proc.stdout
    log = (home / "dagster" / "demo.log").read_text()
    assert "Running entrypoint for job transcripts-" in log
    for noise in NOISE:
        assert noise not in proc.stdout + log, [ln for ln in log.splitlines() if noise in ln][:3]


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"real-speech set not found at {MIRROR}")
def test_readme_commands_run_as_written_and_leave_nothing_behind(
    tmp_path, tmp_path_factory, monkeypatch
):
    import dagster as dg

    home = tmp_path / "home"
    dashboard_port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LIBRISPEECH_MIRROR", "SUBSET", "DAGSTER_HOME", "RAY_ADDRESS", "DEBUG")
    }
    tmp = Path(os.environ[SYSTEM_TMPDIR])  # /tmp, unless the user's TMPDIR says otherwise
    env |= {
        "TMPDIR": str(tmp),  # the demos use the system's temp dir, as a user's would
        "AUDIO_PIPELINE_HOME": str(home),
        "AUDIO_PIPELINE_PROFILE": "local",
        "AUDIO_PIPELINE_RAY_PORT": str(free_port()),
        "AUDIO_PIPELINE_RAY_DASHBOARD_PORT": str(dashboard_port),
    }
    # Not counted: this session's tmp_path folders (this test's home among them; every xdist
    # worker's) and the temp dir of the other tests, which run beside this one (conftest).
    base = tmp_path_factory.getbasetemp()
    skip = {base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base}
    skip.add(Path(os.environ["TMPDIR"]))
    before_tmp, before_repo = _size(tmp, skip), _repo_files()
    # In README order: the query reads what the demos wrote.
    expect = {normalized(c): needles for c, needles in RUN.items()}
    # Ray's default port for a node's job agent, held as another cluster on this machine would
    # hold it: the demo's head takes free ports for its internal services.
    squatter = _hold(RAY_AGENT_DEFAULT_PORT)
    try:
        for command in readme_commands(README.read_text()):
            if normalized(command) not in expect:
                continue  # NOT_RUN (the test above keeps the two lists complete)
            proc = _run(command, env)
            at = 0
            for needle in expect[normalized(command)]:
                at = proc.stdout.find(needle, at)
                assert at >= 0, f"{command}: {needle!r} not in\n{proc.stdout[-3000:]}"
            if command == "make demo":
                assert_healthy_demo(proc, home, f"http://127.0.0.1:{dashboard_port}")
        # make demo again, with Dagster's whole console log: nothing left to do, and it says so
        again = _run("make demo DEBUG=1", env, timeout=600)
        assert "nothing to transcribe" in again.stdout
        assert " - INFO - " in again.stdout + again.stderr
        assert "ok / error         22 / 0" in again.stdout
        for noise in NOISE:
            assert noise not in again.stdout + again.stderr
        assert " - ERROR - " not in again.stdout + again.stderr
    finally:
        if squatter:
            squatter.close()
        stop = subprocess.run(
            ["make", "-s", "stop"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
    assert stop.returncode == 0, stop.stderr
    assert "stopped the Ray head" in stop.stdout
    # every run of the three demos succeeded, and none logged at error level
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 9 and all(r.is_success for r in runs)
        levels = [e.level for r in runs for e in instance.all_logs(r.run_id)]
        assert levels and max(levels) < 40  # logging.ERROR
    assert _repo_files() == before_repo
    grown = _size(tmp, skip) - before_tmp
    assert grown < 20 * 1024 * 1024, f"{tmp} grew by {grown / 2**20:.1f} MB"
    assert_real_speech_wer_within_0_3_points_of_faster_whisper_alone(home)


def assert_real_speech_wer_within_0_3_points_of_faster_whisper_alone(home: Path) -> None:
    """The dev-real demo above ran the default job (ctranslate2, packing on) over the 51 real
    utterances; its table, against faster-whisper's own loop on the same model and files."""
    import duckdb

    from audio_pipeline.transcription.quality import corpus_wer

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT file_path, status, text FROM transcripts WHERE file_path LIKE 'dev-real/%'"
        ).fetchall()
    assert len(rows) == 51 and {status for _, status, _ in rows} == {"ok"}, rows[:3]
    texts = {Path(path).stem: text for path, _, text in rows}
    alone = faster_whisper_alone(REALSPEECH)
    assert set(alone) == set(texts)
    engine_wer = corpus_wer(alone.values())
    pipeline_wer = corpus_wer((ref, texts[utt]) for utt, (ref, _) in alone.items())
    print(f"real speech: pipeline WER {pipeline_wer:.4f}, faster-whisper alone {engine_wer:.4f}")
    assert pipeline_wer <= engine_wer + 0.003, (pipeline_wer, engine_wer)
