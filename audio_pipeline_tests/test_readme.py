"""Every command of the README's local code blocks, run as written (the Snowflake blocks need an
account; ``make snowflake-rehearsal`` runs that path offline).

A command found in the README must be listed below, in ``RUN`` (with what its output must show)
or in ``NOT_RUN`` (with why); a new or changed command fails this test until it is, so a README
command cannot break unseen. The commands run through ``bash`` from the repository root, as a
reader would type them, in a fresh ``AUDIO_PIPELINE_HOME``, on the session's Ray head
(``RAY_ADDRESS``, which the README documents) rather than a head on the default ports.
"""

import os
import re
import shlex
import subprocess

import pytest

from .helpers import MIRROR, REPO_ROOT

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


@pytest.mark.slow
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"real-speech set not found at {MIRROR}")
def test_readme_commands_run_as_written(tmp_path, ray_compute):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("LIBRISPEECH_MIRROR", "SUBSET")}
    env |= {
        "AUDIO_PIPELINE_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "AUDIO_PIPELINE_PROFILE": "local",
        "RAY_ADDRESS": ray_compute.dashboard_url,
    }
    # In README order: the query reads what the demos wrote.
    expect = {normalized(c): needles for c, needles in RUN.items()}
    for command in readme_commands(README.read_text()):
        if normalized(command) not in expect:
            continue  # NOT_RUN (the test above keeps the two lists complete)
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        at = 0
        for needle in expect[normalized(command)]:
            at = proc.stdout.find(needle, at)
            assert at >= 0, f"{command}: {needle!r} not in\n{proc.stdout[-3000:]}"
