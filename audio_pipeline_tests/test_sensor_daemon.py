"""The new-file sensor under the real daemon: `dagster dev` with Dagster's sensor deadline lowered
(DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS=8) and a stage whose first registration in one go takes
longer than that (60,000 empty files: the sensor reads no content). Each tick does a budget of
2 s or 20,000 files, whichever comes first, and goes on in the next (the file cap makes the
backlog take several ticks on a machine fast enough to register it all inside the budget); runs
stay queued (max_concurrent_runs: 0), so only the sensor works.
"""

import os
import time

import duckdb
import pytest

from tools.bench.sensor_daemon import INSTANCE_YAML, SELECTOR

from .helpers import dagster_dev, graphql

pytestmark = pytest.mark.slow

FILES, FOLDERS = 60_000, 30
TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 200) { status runIds error { message } } } }
  }
}"""
RUNS = """
query { runsOrError(filter: {pipelineName: "transcribe_new_files"}) {
  ... on Runs { results { status tags { key value } } } } }"""


def test_a_large_first_registration_never_fails_a_tick_under_the_daemon(tmp_path):
    home = tmp_path / "home"
    for i in range(FILES):
        folder = home / "stage" / f"spk{i % FOLDERS:02d}"
        if i < FOLDERS:
            folder.mkdir(parents=True)
        (folder / f"utt{i:06d}.flac").touch()
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    env = os.environ | {
        "AUDIO_PIPELINE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS": "8",
        "AUDIO_PIPELINE_SENSOR_TICK_BUDGET_S": "2",
        "AUDIO_PIPELINE_SENSOR_FILES_PER_TICK": "20000",
        "AUDIO_PIPELINE_SENSOR_INTERVAL_S": "1",
    }
    env.pop("RAY_ADDRESS", None)
    with dagster_dev(tmp_path, env) as server:
        url, log = server.url, server.log
        deadline = time.monotonic() + 150
        ticks = []
        while time.monotonic() < deadline:
            sensor = graphql(url, TICKS, {"selector": SELECTOR})["sensorOrError"]
            if sensor["__typename"] != "Sensor":  # the code location is still loading
                time.sleep(2)
                continue
            ticks = list(reversed(sensor["sensorState"]["ticks"]))  # oldest first
            statuses = [t["status"] for t in ticks]
            if "SUCCESS" in statuses and statuses[-1] == "SKIPPED":
                break  # registered, then a tick with nothing new
            time.sleep(2)
        else:
            where = graphql(
                url, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
            )
            pytest.fail(
                f"no quiet tick after the registration: {ticks} {where}\n{log.read_text()[-3000:]}"
            )
        runs = graphql(url, RUNS)["runsOrError"]["results"]
    failures = [t for t in ticks if t["status"] == "FAILURE"]
    assert failures == [], failures
    assert sum(t["status"] == "SUCCESS" for t in ticks) >= 2  # the backlog took several ticks
    partitions = sorted(
        tag["value"] for run in runs for tag in run["tags"] if tag["key"] == "dagster/partition"
    )
    assert {run["status"] for run in runs} == {"QUEUED"}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        total, distinct = con.execute(
            "SELECT count(*), count(DISTINCT file_path) FROM audio_files"
        ).fetchone()
        batches = [
            k for (k,) in con.execute("SELECT DISTINCT batch_key FROM audio_files").fetchall()
        ]
    assert total == distinct == FILES  # every file, once
    assert sorted(batches) == partitions  # every batch requested as a run, once
