"""Nothing left behind: `make demo` twice and `make stop` leave no file outside the project's
home, and /tmp returns to its size (Ray's temp dir goes with its head; no runtime environment
copies the virtualenv)."""

import os
import subprocess
from pathlib import Path

import pytest

from .helpers import REPO_ROOT, free_port

pytestmark = pytest.mark.slow


def _size(root: Path, skip: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda _e: None):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
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
    return {line for line in out.stdout.splitlines() if "__pycache__" not in line}


def test_make_demo_twice_and_make_stop_leave_nothing_behind(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "RAY_ADDRESS")}
    env |= {
        "AUDIO_PIPELINE_HOME": str(home),
        "AUDIO_PIPELINE_RAY_PORT": str(free_port()),
        "AUDIO_PIPELINE_RAY_DASHBOARD_PORT": str(free_port()),
    }
    env.pop("LIBRISPEECH_MIRROR", None)
    tmp = Path("/tmp")
    before_tmp, before_repo = _size(tmp, tmp_path), _repo_files()
    try:
        for _ in range(2):
            demo = subprocess.run(
                ["make", "-s", "demo"], cwd=REPO_ROOT, env=env, capture_output=True,
                text=True, timeout=900,
            )  # fmt: skip
            assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "ok / error" in demo.stdout or "nothing to transcribe" in demo.stdout
    finally:
        stop = subprocess.run(
            ["make", "-s", "stop"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
    assert stop.returncode == 0, stop.stderr
    assert "stopped the Ray head" in stop.stdout
    assert _repo_files() == before_repo
    grown = _size(tmp, tmp_path) - before_tmp
    assert grown < 20 * 1024 * 1024, f"/tmp grew by {grown / 2**20:.1f} MB"
