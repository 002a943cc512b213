"""Browser test: `dagster dev` really started, headless Chromium (Debian's) really looking."""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import free_port

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)"),
]


@pytest.fixture
def dagster_dev(tmp_path):
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    env = os.environ | {"AUDIO_PIPELINE_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    log = open(tmp_path / "dagster-dev.log", "wb")
    dagster = Path(sys.executable).with_name("dagster")
    # dagster dev ignores SIGTERM when backgrounded: own session, stopped by PID (process group).
    proc = subprocess.Popen(
        [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()
                time.sleep(1)
        else:
            pytest.fail("dagster dev did not answer in 120 s")
        yield url
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=20)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()


def test_ui_shows_the_three_assets_and_the_running_sensor(dagster_dev):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{dagster_dev}/assets/transcripts?view=lineage&lineageScope=upstream")
        for name in ("librispeech_audio", "transcription_compute_pool", "transcripts"):
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        try:  # the first visit may show the community modal
            page.get_by_role("button", name="Skip").click(timeout=5_000)
        except Exception:
            pass
        page.screenshot(path=str(ARTIFACTS / "asset-lineage.png"))

        page.goto(f"{dagster_dev}/overview/automation")
        page.get_by_text("new_stage_files_sensor", exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("transcribe_new_files_schedule", exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "automation.png"))

        page.goto(
            f"{dagster_dev}/locations/audio_pipeline.definitions:defs/sensors/"
            "new_stage_files_sensor"
        )
        page.get_by_text("Running", exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("Cursor").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "sensor.png"))
        browser.close()
    assert (ARTIFACTS / "asset-lineage.png").stat().st_size > 10_000
    assert (ARTIFACTS / "automation.png").stat().st_size > 10_000
