"""``make snowflake-rehearsal``: the whole Snowflake path offline, before spending credits.

Starts a three-node Ray cluster on loopback (a head and two worker raylets with one logical GPU
each, the second worker joining late) and the emulated account (tools/snowflake_emulator:
fakesnow plus
documented answers; the real connector, Snowpark, ML Jobs SDK and job launcher), runs
``snowflake_setup`` against it, then ``cli demo`` on the ``snowflake`` profile with the bundled
tiny.en, and prints the demo's summary, the transcripts metadata that came back through Pipes and
the four check results. Everything it starts, it stops (by PID).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

SECRET_FREE_PASSWORD = "emulated"  # the emulated account accepts any login


def main() -> int:
    warnings.filterwarnings("ignore")
    import logging

    # the emulated account's own request log is not part of what a user reads
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "fakesnow", "fakesnow.server"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import dagster as dg

    from audio_pipeline import cli, snowflake_preflight, snowflake_setup

    from .ray_cluster import LoopbackCluster
    from .snowflake_emulator import EmulatedAccount

    work = Path(tempfile.mkdtemp(prefix="snowflake-rehearsal-"))
    cluster = LoopbackCluster(work / "ray", cpus_per_node=2, gpus_per_node=1)
    account = None
    try:
        print("rehearsal: starting a 3-node Ray cluster on loopback (1 logical GPU per node)")
        cluster.start()
        cluster.add_worker()
        cluster.add_worker(wait=False)  # joins while the job waits for its nodes
        account = EmulatedAccount(
            work / "account",
            ray_address=cluster.gcs_address,
            worker_logs=cluster.worker_logs(2),
        )
        account.start()
        print(f"rehearsal: emulated Snowflake account on 127.0.0.1:{account.port}")
        os.environ.update(
            {
                "AUDIO_PIPELINE_PROFILE": "snowflake",
                "AUDIO_PIPELINE_HOME": str(work / "home"),
                "SNOWFLAKE_ACCOUNT": "emulated",
                "SNOWFLAKE_USER": "rehearsal",
                "SNOWFLAKE_PASSWORD": SECRET_FREE_PASSWORD,
                "SNOWFLAKE_HOST": "127.0.0.1",
                "SNOWFLAKE_PORT": str(account.port),
                "SNOWFLAKE_PROTOCOL": "http",
                "SNOWFLAKE_NETWORK_TIMEOUT": "30",  # fail, never retry for minutes
                "AUDIO_PIPELINE_JOB_NODES": "3",  # the three nodes started above
            }
        )
        os.environ.pop("DAGSTER_HOME", None)  # an ephemeral instance: nothing left behind
        os.environ.pop("SNOWFLAKE_CONNECTION_NAME", None)
        print("rehearsal: make snowflake-setup")
        if snowflake_setup.main([]) != 0:
            return 1
        instance = dg.DagsterInstance.ephemeral()  # the demo's runs, readable below
        rc = cli.demo("sample", "bundled:tiny.en", "ctranslate2", instance=instance)
        if rc != 0:
            return rc
        event = instance.get_latest_materialization_event(dg.AssetKey("transcripts"))
        meta = event.asset_materialization.metadata if event else {}
        print("Metadata reported by the ML Job through Pipes:")
        keys = ("files", "transcribed_now", "ok", "errors", "nodes", "expected_nodes", "actors",
                "wer_percent", "x_real_time", "snowflake_ml_job_id")  # fmt: skip
        for key in keys:
            if key in meta:
                print(f"  {key:<20} {getattr(meta[key], 'value', meta[key])}")
        print("Checks:")
        checks = 0
        for name in ("completeness", "error_rate", "wer", "hallucinations"):
            key = dg.AssetCheckKey(dg.AssetKey("transcripts"), name)
            records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
            evaluation = records[0].event.dagster_event.event_specific_data if records else None
            if evaluation is not None:
                checks += 1
                print(f"  {name:<20} {'passed' if evaluation.passed else 'FAILED'}")
            elif records:  # planned, no result: nothing to measure (e.g. no references)
                print(f"  {name:<20} skipped (not applicable)")
            else:
                print(f"  {name:<20} not reported")
        jobs = list(account.jobs.values())
        print(f"ML Jobs run: {len(jobs)} ({', '.join(f'{j.id} {j.status}' for j in jobs)})")
        if checks != 4:
            return 1
        print("rehearsal: make snowflake-check (the preflight, on the same account)")
        return snowflake_preflight.main(
            ["--model", "bundled:tiny.en", "--engine", "ctranslate2", "--hours", "10"]
        )
    finally:
        if account is not None:
            account.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)  # homes, logs, the account's job containers


if __name__ == "__main__":
    from tools import exit_on_sigterm

    exit_on_sigterm()
    sys.exit(main())
