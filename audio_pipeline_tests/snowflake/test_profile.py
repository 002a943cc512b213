"""The snowflake profile: definitions load without connecting; secrets never leak."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from audio_pipeline.assets.compute_pool import transcription_compute_pool
from audio_pipeline.assets.ingest import librispeech_audio
from audio_pipeline.definitions import build_definitions
from audio_pipeline.profiles import resources_for, snowflake_connection
from audio_pipeline.resources.compute import SnowflakeMLJobCompute
from audio_pipeline.resources.stage import SnowflakeStage
from audio_pipeline.resources.warehouse import SnowflakeStore
from audio_pipeline.transcription import snowflake_sql
from audio_pipeline.transcription.librispeech import BUNDLED_ROOT

from ..helpers import SECRET, create_schema

ROOT = Path(__file__).resolve().parents[2]
DUMMY = {
    "AUDIO_PIPELINE_PROFILE": "snowflake",
    "SNOWFLAKE_ACCOUNT": "dummy-account",
    "SNOWFLAKE_USER": "dummy_user",
    "SNOWFLAKE_PASSWORD": SECRET,
    "SNOWFLAKE_ROLE": "SYSADMIN",
    "SNOWFLAKE_WAREHOUSE": "ML_MODEL_WH",
}
_db = itertools.count()


@pytest.mark.slow  # a subprocess
def test_definitions_load_under_snowflake_profile_without_connecting():
    """A fresh interpreter imports audio_pipeline.definitions; any connect attempt would raise."""
    code = """
import json, snowflake.connector, snowflake.snowpark
def refuse(*a, **k):
    raise AssertionError("connected while loading definitions")
snowflake.connector.connect = refuse
from audio_pipeline.definitions import defs
graph = defs.resolve_asset_graph()
print(json.dumps({
    "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
    "resources": {k: type(v).__name__ for k, v in defs.resources.items()},
    "default_model": defs.resources["compute"].default_model,
}))
"""
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    env |= DUMMY | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["assets"] == ["librispeech_audio", "transcription_compute_pool", "transcripts"]
    assert loaded["resources"]["stage"] == "SnowflakeStage"
    assert loaded["resources"]["store"] == "SnowflakeStore"
    assert loaded["resources"]["compute"] == "SnowflakeMLJobCompute"
    assert loaded["default_model"] == (  # pinned: copied once into the models stage
        "openai/whisper-large-v3@06f233fe06e710322aca913c1bc4249a0d71fce1"
    )
    assert SECRET not in out.stdout + out.stderr


def test_profile_uses_env_vars_not_their_values():
    res = resources_for("snowflake", DUMMY)
    build_definitions(res)  # validates the wiring
    resource = res["store"].connection.resource
    assert resource.password == dg.EnvVar("SNOWFLAKE_PASSWORD")
    assert resource.account == dg.EnvVar("SNOWFLAKE_ACCOUNT")
    assert resource.role == dg.EnvVar("SNOWFLAKE_ROLE")
    assert res["store"].connection.database == "MULTINODE_MULTIGPU_MYDB"  # seed default
    assert res["stage"].stage_name == "AUDIO_FILES_STAGE"
    assert res["compute"].pool_name == "AUDIO_PROCESSING_CP_GPU_NV_S_5_NODES"
    assert res["compute"].job_stage == "JOB_STAGE"
    assert SECRET not in repr(res)


def test_profile_private_key_and_named_connection():
    key = snowflake_connection(
        {
            "SNOWFLAKE_ACCOUNT": "a",
            "SNOWFLAKE_USER": "u",
            "SNOWFLAKE_PRIVATE_KEY_PATH": "/keys/rsa.p8",
            "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": SECRET,
        }
    )
    assert key.resource.password is None
    assert key.resource.private_key_path == dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PATH")
    assert key.resource.private_key_password == dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE")
    named = snowflake_connection({"SNOWFLAKE_CONNECTION_NAME": "prod", "SNOWFLAKE_DATABASE": "D"})
    assert named.resource is None
    assert named.connection_name == dg.EnvVar("SNOWFLAKE_CONNECTION_NAME")
    assert named.database == dg.EnvVar("SNOWFLAKE_DATABASE")


def test_no_secret_in_logs_metadata_or_errors(fakesnow_server, monkeypatch, tmp_path, capfd):
    """Ingest the sample through the profile's real resources on fakesnow, then fail the pool.

    The password is planted in the environment; it must not appear in the Dagster event log,
    materialization metadata, the failure, or anything printed.
    """
    env = {
        "SNOWFLAKE_ACCOUNT": fakesnow_server["account"],
        "SNOWFLAKE_USER": fakesnow_server["user"],
        "SNOWFLAKE_PASSWORD": SECRET,
        "SNOWFLAKE_DATABASE": f"PROFILEDB_{next(_db)}",
        "SNOWFLAKE_HOST": fakesnow_server["host"],
        "SNOWFLAKE_PORT": str(fakesnow_server["port"]),
        "SNOWFLAKE_PROTOCOL": "http",
        # fakesnow answers DESCRIBE COMPUTE POOL with HTTP 500, which the connector retries
        "SNOWFLAKE_NETWORK_TIMEOUT": "5",
        "AUDIO_PIPELINE_HOME": str(tmp_path / "home"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = resources_for("snowflake", env)
    with res["store"].connection.process_config_and_initialize_cm() as connection:
        create_schema(connection)
        with connection.connect() as conn:
            stage_fqn = connection.object_name("AUDIO_FILES_STAGE")
            snowflake_sql.execute(conn.cursor(), "create_stage", stage=stage_fqn)

    with dg.instance_for_test() as instance:
        ok = dg.materialize(
            [librispeech_audio], resources=res, partition_key="sample", instance=instance
        )
        assert ok.success
        meta = ok.asset_materializations_for_node("librispeech_audio")[0].metadata
        n_files = len(list((BUNDLED_ROOT / "sample").glob("*/*/*.flac")))
        assert meta["files"].value == n_files and meta["copied"].value == n_files
        assert meta["stage"].value.endswith(".AUDIO_TRANSCRIPTION_SCH.AUDIO_FILES_STAGE")
        failed = dg.materialize(
            [transcription_compute_pool], resources=res, instance=instance, raise_on_error=False
        )
        assert not failed.success
        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        error_text = str(failure.step_failure_data.error)
        assert "COMPUTE" in error_text.upper()
        logs = [
            json.dumps(e.to_dict() if hasattr(e, "to_dict") else str(e), default=str)
            for run in (ok, failed)
            for e in instance.all_logs(run.run_id)
        ]
    captured = capfd.readouterr()
    haystacks = {
        "event log": "\n".join(logs),
        "metadata": repr(meta),
        "failure": error_text,
        "stdout": captured.out,
        "stderr": captured.err,
    }
    for where, text in haystacks.items():
        assert SECRET not in text, where
    assert len(logs) > 10

    stage = SnowflakeStage(connection=res["stage"].connection)
    store = SnowflakeStore(connection=res["store"].connection)
    with stage.connection.process_config_and_initialize_cm() as connection:
        stage = stage.model_copy(update={"connection": connection})
        store = store.model_copy(update={"connection": connection})
        assert len(list(stage.list_files("sample"))) == n_files
        assert len(store.pending_files(["librispeech-sample"], "m")) == n_files


@pytest.mark.parametrize("profile_env", [DUMMY])
def test_compute_default_sizes_follow_the_seed(profile_env):
    compute = resources_for("snowflake", profile_env)["compute"]
    assert isinstance(compute, SnowflakeMLJobCompute)
    assert compute.instance_family == "GPU_NV_S"
    assert compute.ingest_pool_name == "AUDIO_PROCESSING_CP_DATA_DOWNLOAD"
    assert compute.ingest_instance_family == "CPU_X64_M"
    assert (compute.auto_suspend_secs, compute.auto_resume, compute.initially_suspended) == (
        300,
        True,
        True,
    )
