import dagster as dg
import pytest

from audio_pipeline.definitions import build_definitions, defs
from audio_pipeline.profiles import active_profile, local_settings, resources_for


def test_definitions_load_with_three_assets_and_resources():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"librispeech_audio", "transcription_compute_pool", "transcripts"}
    transcripts = graph.get(dg.AssetKey("transcripts"))
    assert transcripts.partitions_def.name == "transcript_batches"
    assert transcripts.backfill_policy == dg.BackfillPolicy.single_run()
    ingest = graph.get(dg.AssetKey("librispeech_audio"))
    assert "sample" in ingest.partitions_def.get_partition_keys()
    assert "dev-clean" in ingest.partitions_def.get_partition_keys()
    assert {"stage", "store", "compute", "librispeech_source"} <= set(defs.resources)


def test_local_profile_paths_follow_home(tmp_path):
    env = {"AUDIO_PIPELINE_HOME": str(tmp_path / "h"), "LIBRISPEECH_MIRROR": "/mirror"}
    settings = local_settings(env)
    assert settings.stage_root == tmp_path / "h" / "stage"
    assert settings.warehouse_path == tmp_path / "h" / "warehouse.duckdb"
    res = resources_for("local", env)
    assert res["store"].path == str(tmp_path / "h" / "warehouse.duckdb")
    assert res["librispeech_source"].mirror == "/mirror"
    assert res["compute"].dashboard_url == "http://127.0.0.1:8265"
    build_definitions(res)  # validates resource wiring


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of local, snowflake"):
        active_profile({"AUDIO_PIPELINE_PROFILE": "cloudy"})


@pytest.mark.slow
def test_the_local_code_location_imports_no_snowflake_stack():
    """A code server on the local profile (the one that ticks the sensor) loads neither
    dagster_snowflake (Snowpark, snowflake.core) nor pandas or pyarrow: about 180 MB less in
    every Dagster process, which keeps the sensor at a million files under 300 MB."""
    import subprocess
    import sys

    probe = (
        "import sys, audio_pipeline.definitions as d; d.defs.resolve_asset_graph(); "
        "print(sorted(m for m in ('dagster_snowflake', 'snowflake.connector', 'pandas', "
        "'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "AUDIO_PIPELINE_PROFILE": "local"},
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
