"""Transcription on the shared multi-node fixture: a head and two worker raylets on loopback."""

import dagster as dg
import pytest
from ray.util.state import list_actors

from audio_pipeline.definitions import ASSETS

from .helpers import make_resources, sensor_batches, stage_sample

pytestmark = pytest.mark.slow


def test_actors_spread_over_the_nodes_and_every_file_lands_once(home, instance, multinode_ray):
    multinode_ray.join_late()
    nodes = multinode_ray.wait_nodes(3)
    res = make_resources(home, ray_compute=multinode_ray.compute)
    stage_sample(home)
    key = sensor_batches(res, instance, cap=8)[0]  # 8 files: 4 calls of 2 for 3 actors
    result = dg.materialize(
        ASSETS,
        selection=["transcripts"],
        partition_key=key,
        resources=res,
        instance=instance,
        # Small calls, so that there is work for an actor on every node.
        run_config={"ops": {"transcripts": {"config": {"batch_size": 2}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("transcripts")[0].metadata
    assert (meta["files"].value, meta["ok"].value, meta["actors"].value) == (8, 8, 3)
    assert res["store"].query(
        "SELECT count(*), count(DISTINCT file_path), count(DISTINCT content_md5) "
        "FROM transcripts WHERE status = 'ok'"
    ) == [(8, 8, 8)]
    placed = {
        a.node_id
        for a in list_actors(address=multinode_ray.compute.dashboard_url, limit=1000, detail=True)
        if "Transcriber" in (a.class_name or "") and a.node_id
    }
    assert placed == {n["node_id"] for n in nodes}  # a Whisper actor ran on every node
