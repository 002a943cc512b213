"""``make snowflake-check`` on the emulated account (tools/snowflake_emulator: only Snowflake's
SQL/REST endpoint and the container are emulated; the connector, Snowpark, the ML Jobs SDK and
its launcher are real): the pass, and each failure with its fix."""

from __future__ import annotations

import pytest

from audio_pipeline import snowflake_preflight as pf
from audio_pipeline.resources.compute import SnowflakeMLJobCompute
from audio_pipeline.resources.snowflake_connection import SnowflakeConnection
from audio_pipeline.resources.stage import SnowflakeStage

from ..helpers import SAMPLE_TREE

FLAC = sorted(SAMPLE_TREE.glob("*/*/*.flac"))[0]
# the bundled model resolves inside the job without a network; the hub is not reachable here
OPTIONS = dict(model="bundled:tiny.en", engine="ctranslate2", job_timeout_s=240)


def by_name(checks: list[pf.Check]) -> dict[str, pf.Check]:
    return {c.name: c for c in checks}


def staged(connection) -> tuple[SnowflakeMLJobCompute, SnowflakeStage]:
    stage = SnowflakeStage(connection=connection)
    assert stage.put_file(FLAC, f"dev-clean/{FLAC.name}")
    stage.close()
    return SnowflakeMLJobCompute(connection=connection, poll_interval_s=0.3), stage


def test_check_lines_say_result_and_fix():
    fail = pf.Check("GPU", "FAIL", "none visible", "use a GPU pool")
    assert fail.line() == "FAIL  GPU: none visible  -> fix: use a GPU pool"
    assert pf.Check("GPU", "ok", "NVIDIA A10G", "unused").line() == "ok    GPU: NVIDIA A10G"


def test_cost_estimates_follow_the_documented_rates():
    compute = SnowflakeMLJobCompute(connection=SnowflakeConnection(connection_name="unused"))
    run = pf.estimate_run(10.0, compute)
    # 5 nodes x 0.57 credits/h: 5 min start-up + 10 h / (32x x 5) = 3.75 min of work, plus the
    # pool's one node until it suspends (300 s); XSMALL for the work plus its 60 s minimum
    gpu = 0.57 * (5 * (300 + 225) + 1 * 300) / 3600
    assert run["gpu_credits"] == pytest.approx(gpu)
    assert run["warehouse_credits"] == pytest.approx((225 + 60) / 3600)
    day = pf.estimate_sensor_day(60, busy_ticks=24)
    assert day["ticks"] == 1440 and day["credits"] == pytest.approx(24 * 60 / 3600)
    lines = [c.line() for c in pf.cost_checks(compute, pf.Options(audio_hours=10))]
    assert lines[0].startswith("info  cost of one transcripts run: 0.54 credits for 10 h")
    assert "0.40 credits/day" in lines[1]


def test_preflight_passes_on_a_set_up_account(acct_connection, emulated_account):
    compute, stage = staged(acct_connection)
    lines = []
    checks = pf.run_checks(acct_connection, compute, stage, pf.Options(**OPTIONS), lines.append)
    assert [c.line() for c in checks if c.status in ("FAIL", "warn")] == []
    found = by_name(checks)
    assert found["credentials"].detail.endswith("role SYSADMIN")
    assert found[f"pool {compute.pool_name} MAX_NODES"].detail == "5 >= target 5"
    assert found["runtime image"].detail.startswith("Python 3.11 client -> /snowflake/images")
    assert found["stage read in the job"].detail.startswith(f"dev-clean/{FLAC.name}: ")
    assert f"{FLAC.stat().st_size} bytes" in found["stage read in the job"].detail
    assert found["GPU"].detail.startswith("NVIDIA A10G, driver CUDA 12.4")
    assert found["package index"].status == "ok" and found["model"].status == "ok"
    assert found["image"].detail.startswith("Python 3.11") and "torch 2." in found["image"].detail
    assert [c.status for c in checks if c.name.startswith("requirement ")] == ["ok"] * 4
    assert lines == [c.line() for c in checks]  # every line printed is one check
    # the smoke job cleaned up after itself: its service is gone from SHOW JOB SERVICES
    smoke = [j for j in emulated_account.jobs.values() if j.name.startswith("PREFLIGHT_")]
    assert smoke and all(j.status == "DONE" and j.dropped for j in smoke)


def test_missing_privilege_and_no_image_give_their_fixes(acct_connection, emulated_account):
    """A job role with USAGE on the database only, and an account without a 3.11 image."""
    compute, stage = staged(acct_connection)
    with acct_connection.connect() as conn:
        conn.cursor().execute(f'GRANT USAGE ON DATABASE "{acct_connection.database}" TO ROLE HALF')
    emulated_account.runtime_pythons = {"3.10"}
    try:
        options = pf.Options(job_role="HALF", **OPTIONS)
        checks = pf.run_checks(acct_connection, compute, stage, options)
    finally:
        emulated_account.runtime_pythons = None
    found = by_name(checks)
    db = acct_connection.database
    assert found[f"job role HALF on DATABASE {db}"].status == "ok"
    stage_check = found[f"job role HALF on STAGE {db}.AUDIO_TRANSCRIPTION_SCH.AUDIO_FILES_STAGE"]
    assert stage_check.status == "FAIL"
    assert (
        f"GRANT READ, WRITE ON STAGE {db}.AUDIO_TRANSCRIPTION_SCH.AUDIO_FILES_STAGE TO ROLE HALF"
        in stage_check.fix
    )
    pool = found[f"job role HALF on COMPUTE POOL {compute.pool_name}"]
    assert pool.status == "FAIL" and "--job-role HALF" in pool.fix
    image = found["runtime image"]
    assert image.status == "FAIL" and image.detail == "none for Python 3.11"
    assert "Python 3.10" in image.fix and pf.MULTINODE_DOCS in image.fix
    assert "runtime_environment" in image.fix
    # the running role itself has what it needs; nothing was submitted
    assert all(c.status == "ok" for c in checks if c.name.startswith("role SYSADMIN"))
    assert found["smoke job"].status == "FAIL" and "not submitted" in found["smoke job"].detail


@pytest.mark.waits
def test_blocked_stage_read_and_no_gpu_give_their_fixes(acct_connection, emulated_account):
    compute, stage = staged(acct_connection)
    emulated_account.block_stage_reads = {"AUDIO_FILES_STAGE"}
    emulated_account.gpu_name = None
    try:
        checks = pf.run_checks(acct_connection, compute, stage, pf.Options(**OPTIONS))
    finally:
        emulated_account.block_stage_reads = set()
        emulated_account.gpu_name = "NVIDIA A10G"
    found = by_name(checks)
    assert found["smoke job"].status == "ok"
    read = found["stage read in the job"]
    assert read.status == "FAIL" and read.detail.startswith(f"dev-clean/{FLAC.name}: ")
    assert "the job cannot read the stage the way the payload does" in read.fix
    gpu = found["GPU"]
    assert gpu.status == "FAIL" and gpu.detail.startswith("no GPU visible")
    assert "GPU_NV_*" in gpu.fix
    assert found["package index"].status == "ok"  # the rest still passes
