"""Transcription on the shared multi-node fixture: a head and two worker raylets on loopback."""

import json
import shutil

import dagster as dg
import pytest
from ray.util.state import list_actors

from audio_pipeline.definitions import ASSETS
from audio_pipeline.transcription.quality import word_errors
from tools.longform_corpus import build

from .helpers import REALSPEECH, make_resources, sensor_batches, stage_sample

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not REALSPEECH.is_dir(), reason=f"real-speech set not found at {REALSPEECH}")
def test_a_long_files_pieces_are_transcribed_on_both_raylets_and_stitched_in_order(
    home, instance, multinode_ray, tmp_path
):
    """The shorter file of the long-form set (3.1 min, a dev-real chapter joined; test_longform
    decodes both) on the head and one worker raylet: it is cut, its pieces spread over both,
    and stitched into one row."""
    nodes = multinode_ray.wait_nodes(2)
    tree = build(REALSPEECH, tmp_path / "longform", min_s=180)
    stage = home / "stage" / "drop"
    stage.mkdir(parents=True)
    refs = {}
    for flac in sorted(tree.glob("*/*/*.flac"), key=lambda f: f.stat().st_size)[:1]:
        shutil.copyfile(flac, stage / flac.name)
        trans = next(flac.parent.glob("*.trans.txt")).read_text()
        refs[f"drop/{flac.name}"] = trans.split(" ", 1)[1]
    res = make_resources(home, ray_compute=multinode_ray.compute)
    (key,) = sensor_batches(res, instance, cap=10)
    result = dg.materialize(
        ASSETS,
        selection=["transcripts"],
        partition_key=key,
        resources=res,
        instance=instance,
        # One piece per call: more calls than actors, so both actors take some.
        run_config={"ops": {"transcripts": {"config": {"batch_size": 1}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("transcripts")[0].metadata
    assert (meta["files"].value, meta["ok"].value, meta["long_files"].value) == (1, 1, 1)
    assert meta["pieces"].value >= 7  # 3.1 min in pieces of at most 28 s
    assert meta["piece_nodes"].value >= 2 and len(nodes) >= 2  # pieces on both raylets
    rows = res["store"].query(
        "SELECT file_path, status, text, duration_s, segments FROM transcripts ORDER BY file_path"
    )
    assert [r[0] for r in rows] == sorted(refs)  # one row per file
    for path, status, text, duration, segments in rows:
        assert status == "ok"
        errors, words = word_errors(refs[path], text)
        assert errors / words < 0.08  # the whole text, every piece's share in it
        segs = json.loads(segments) if isinstance(segments, str) else segments
        starts = [s["start"] for s in segs]
        assert duration > 180 and starts == sorted(starts) and segs[-1]["end"] > duration - 10


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
