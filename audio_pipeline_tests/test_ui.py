"""Browser test: `dagster dev` really started, headless Chromium (Debian's) really looking."""

import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

from . import helpers

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)"),
]


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def dagster_dev(tmp_path, home):
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | {
        "AUDIO_PIPELINE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        # The tests register their own batches; the sensor stays on, ticking rarely.
        "AUDIO_PIPELINE_SENSOR_INTERVAL_S": "3600",
    }
    with helpers.dagster_dev(tmp_path, env) as server:
        yield server.url


@contextlib.contextmanager
def chromium_page():
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
        try:
            yield browser.new_page(viewport={"width": 1600, "height": 1000})
        finally:
            browser.close()


def skip_modal(page) -> None:
    try:  # the first visit may show the community modal
        page.get_by_role("button", name="Skip").click(timeout=5_000)
    except Exception:
        pass


def assets_and_sensor_pages(page, dagster_dev) -> None:
    """The three assets' lineage, the automation overview and the running sensor."""
    page.goto(f"{dagster_dev}/assets/transcripts?view=lineage&lineageScope=upstream")
    for name in ("librispeech_audio", "transcription_compute_pool", "transcripts"):
        page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
    skip_modal(page)
    page.screenshot(path=str(ARTIFACTS / "asset-lineage.png"))

    page.goto(f"{dagster_dev}/overview/automation")
    page.get_by_text("new_stage_files_sensor", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("transcribe_new_files_schedule", exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "automation.png"))

    page.goto(
        f"{dagster_dev}/locations/audio_pipeline.definitions:defs/sensors/new_stage_files_sensor"
    )
    page.get_by_text("Running", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("Cursor").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "sensor.png"))
    assert (ARTIFACTS / "asset-lineage.png").stat().st_size > 10_000
    assert (ARTIFACTS / "automation.png").stat().st_size > 10_000


@pytest.mark.long
def test_ui_shows_the_assets_the_sensor_each_partitions_figures_and_a_readable_failure(
    dagster_dev, home, ray_compute, monkeypatch
):
    """One `dagster dev` and one browser: what a user opens first, then a two-partition run's
    figures per partition and a failed run's message."""
    import dagster as dg

    from audio_pipeline.definitions import ASSETS

    from .helpers import make_resources, sensor_batches, stage_sample

    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    res = make_resources(home, ray_compute=ray_compute)
    with dg.DagsterInstance.get() as instance:  # the instance `dagster dev` shows
        stage_sample(home)
        keys = sensor_batches(res, instance, cap=17)  # 17 files and 5 files
        assert len(keys) == 2
        both = dg.materialize(
            ASSETS,
            selection=["transcripts"],
            resources=res,
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[1],
            },
        )
        assert both.success
        failed = dg.materialize(
            ASSETS,
            selection=["transcripts"],
            partition_key=keys[1],
            resources=res,
            instance=instance,
            run_config={
                "ops": {
                    "transcripts": {"config": {"force": True, "model": str(home / "no-such-model")}}
                }
            },
            raise_on_error=False,
        )
        assert not failed.success

    files_of = {
        key: {
            f
            for (f,) in res["store"].query(
                "SELECT file_path FROM audio_files WHERE batch_key = $k", {"k": key}
            )
        }
        for key in keys
    }
    with chromium_page() as page:
        assets_and_sensor_pages(page, dagster_dev)
        for key, other, files in ((keys[0], keys[1], 17), (keys[1], keys[0], 5)):
            page.goto(f"{dagster_dev}/assets/transcripts?view=partitions&partition={key}")
            skip_modal(page)
            page.get_by_text("transcribed_now").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / f"partition-{files}-files.png"), full_page=True)
            text = page.inner_text("body")
            (ARTIFACTS / f"partition-{files}-files.txt").write_text(text)
            # This partition's own figures and preview, not the run's combined ones.
            assert re.search(r"\bfiles\s+(\d+)", text)[1] == str(files)
            assert re.search(r"\btranscribed_now\s+(\d+)", text)[1] == str(files)
            assert re.search(r"\bjob_files\s+(\d+)", text)[1] == "22"
            shown = set(re.findall(r"drop/\S+\.flac", text))
            assert len(shown) == 5 and shown <= files_of[key] and not shown & files_of[other]
        page.goto(f"{dagster_dev}/runs/{failed.run_id}")
        page.get_by_text("FAILED: ModelError").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "failed-run.png"), full_page=True)
        text = page.inner_text("body")
        (ARTIFACTS / "failed-run.txt").write_text(text)
        # The failure: the payload's error and its log lines; no Pipes protocol anywhere, no
        # stack frames in the message (Dagster shows its own stack trace apart from it).
        assert "__dagster_pipes_version" not in text
        message = text.split("STEP_FAILURE", 1)[1].split("ray_job_id", 1)[0]
        assert "FAILED: ModelError: model path " in message and "last log lines:" in message
        assert 'File "' not in message and "Traceback" not in message
