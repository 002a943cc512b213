"""Any Ray cluster runs the submitting checkout's payload, shipped with the job.

Really started: Ray heads of their own (``ray start --head`` on loopback) — one started from
another checkout's directory, one from a virtual environment that has Ray but not this project.
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from audio_pipeline.definitions import ASSETS
from audio_pipeline.resources.compute import LocalRayCompute
from audio_pipeline.resources.compute.ray_head import RayHead

from .helpers import (
    SAMPLE_TREE,
    TEST_ENVS,
    UV_CACHE,
    build_venv,
    free_port,
    make_resources,
    sensor_batches,
)

FILES = 4  # few files: what is tested is where the code comes from, not throughput

pytestmark = pytest.mark.slow

DECOY_MAIN = "import sys\nprint('DECOY PAYLOAD of the other checkout')\nsys.exit(3)\n"


def other_checkout(root: Path) -> Path:
    """A checkout of another version: its payload fails loudly if it is ever run."""
    pkg = root / "audio_pipeline" / "transcription"
    pkg.mkdir(parents=True)
    (root / "audio_pipeline" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(DECOY_MAIN)
    return root


def start_head(state_dir: Path, **kwargs) -> RayHead:
    head = RayHead(
        state_dir=state_dir,
        gcs_port=free_port(),
        dashboard_port=free_port(),
        num_cpus=2,
        object_store_memory_mb=512,
        start_timeout_s=120,
        **kwargs,
    )
    head.start()
    return head


def transcribe(home, instance, compute) -> dg.ExecuteInProcessResult:
    res = make_resources(home, ray_compute=compute)
    (home / "stage").mkdir(parents=True)
    for flac in sorted(SAMPLE_TREE.glob("*/*/*.flac"))[:FILES]:
        shutil.copyfile(flac, home / "stage" / flac.name)
    (key,) = sensor_batches(res, instance, cap=5000)
    return dg.materialize(
        ASSETS,
        selection=["transcripts"],
        partition_key=key,
        resources=res,
        instance=instance,
        raise_on_error=False,
    )


def rows(home) -> list:
    res = make_resources(home)
    return res["store"].query(
        "SELECT count(*), count(DISTINCT file_path) FROM transcripts WHERE status = 'ok'"
    )


def test_a_head_started_from_another_checkout_runs_this_checkouts_payload(tmp_path, home, instance):
    head = start_head(tmp_path / "ray", cwd=other_checkout(tmp_path / "other-checkout"))
    try:
        # Started from this environment: no pip runtime environment, found without being told.
        compute = LocalRayCompute(home=str(home), address=head.dashboard_url)
        env = compute.runtime_env(tmp_path)
        assert compute.runs_this_python() and not {"pip", "uv"} & set(env)
        result = transcribe(home, instance, compute)
        assert result.success, result.get_step_failure_events()[0].event_specific_data.error
        assert rows(home) == [(FILES, FILES)]
    finally:
        head.stop()


def ray_only_venv(cache: Path) -> Path:
    """A virtual environment with Ray (``ray[default]``, this project's Ray version) and nothing
    of this project; built once, kept in ``cache`` for the next test session."""
    import ray

    venv = cache / f"ray-only-{ray.__version__}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        install = build_venv(venv, [f"ray[default]=={ray.__version__}"])
        assert install.returncode == 0, install.stderr[-3000:]
        (venv / ".complete").write_text("")
    probe = subprocess.run(
        [str(python), "-c", "import audio_pipeline"], capture_output=True, text=True, cwd=venv
    )
    assert probe.returncode != 0, "the Ray-only environment must not see this project"
    return venv


@pytest.mark.long
def test_a_cluster_without_this_project_runs_the_shipped_payload(
    tmp_path, home, instance, monkeypatch
):
    venv = ray_only_venv(TEST_ENVS)
    # uv's cache for the runtime environment the job gets (the head's agent runs uv): kept with
    # the test environments, not in this machine's ~/.cache
    monkeypatch.setenv("UV_CACHE_DIR", str(UV_CACHE))
    head = start_head(tmp_path / "ray", ray_bin=str(venv / "bin" / "ray"), cwd=tmp_path)
    try:
        # address given, python not: the job runs the cluster's python in a runtime
        # environment where uv installed the payload's requirements.
        compute = LocalRayCompute(home=str(home), address=head.dashboard_url)
        assert not compute.runs_this_python()
        result = transcribe(home, instance, compute)
        assert result.success, result.get_step_failure_events()[0].event_specific_data.error
        assert rows(home) == [(FILES, FILES)]
    finally:
        head.stop()  # its temp dir goes with it: the environment uv built (1.3 GB)


def test_only_a_cluster_running_this_python_goes_without_pip(tmp_path):
    """What listens on a loopback address decides: a process of this environment's Python
    (here a plain HTTP server standing in for a dashboard), nothing, or another host."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "-b", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        here = LocalRayCompute(home=str(tmp_path), address=f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while not here.runs_this_python() and time.monotonic() < deadline:
            time.sleep(0.2)  # the server is still starting
        assert here.runs_this_python() and not {"pip", "uv"} & set(here.runtime_env(tmp_path))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:  # never wait for ever on a child
            server.kill()
            server.wait()
    for address in (f"http://127.0.0.1:{free_port()}", "http://10.1.2.3:8265"):
        other = LocalRayCompute(home=str(tmp_path), address=address)
        assert not other.runs_this_python()
        assert "faster-whisper>=1.2,<2" in other.runtime_env(tmp_path)["uv"]["packages"]
        by_pip = LocalRayCompute(home=str(tmp_path), address=address, installer="pip")
        by_pip = by_pip.runtime_env(tmp_path)
        assert "faster-whisper>=1.2,<2" in by_pip["pip"]["packages"] and "uv" not in by_pip
