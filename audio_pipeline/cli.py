"""Command line: ``python -m audio_pipeline.cli demo|stop|query``.

``demo`` materializes the three assets for one LibriSpeech subset on the active profile, in the
Dagster instance at ``DAGSTER_HOME`` (so the runs show up in ``make dev``), then prints a summary
read back from the transcript table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from .partitions import librispeech_batch_key


def _instance():
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        home = os.environ["DAGSTER_HOME"]
        from .run_launcher import write_instance_yaml

        # No telemetry (nothing leaves this machine), run monitoring, the transcription pool.
        write_instance_yaml(home)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _materialize(
    selection: str,
    partition_key: str | None,
    resources: dict,
    instance,
    run_config: dict | None = None,
):
    import dagster as dg

    from .definitions import ASSETS

    run_config = dict(run_config or {})
    run_config["loggers"] = {"console": {"config": {"log_level": "INFO"}}}
    result = dg.materialize(
        ASSETS,
        selection=[selection],
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )
    if not result.success:
        for event in result.all_events:
            if event.is_failure and event.event_specific_data is not None:
                error = getattr(event.event_specific_data, "error", None)
                if error is not None:
                    print(error.to_string(), file=sys.stderr)
        raise SystemExit(f"materializing {selection} failed; see the log above")
    mats = result.asset_materializations_for_node(selection)
    return mats[-1].metadata if mats else {}


def _value(meta: dict, key: str):
    v = meta.get(key)
    return getattr(v, "value", v)


def demo(subset: str, model: str | None, engine: str | None) -> int:
    from .models import model_id_for
    from .profiles import resources_for

    warnings.filterwarnings("ignore")
    resources = resources_for()
    instance = _instance()
    started = time.perf_counter()
    print(f"[1/3] librispeech_audio[{subset}] → stage {resources['stage'].describe()}")
    ingest = _materialize("librispeech_audio", subset, resources, instance)
    print(
        f"      {_value(ingest, 'files')} files, {_value(ingest, 'copied')} copied, "
        f"{_value(ingest, 'audio_hours') * 60:.1f} audio minutes"
    )
    print("[2/3] transcription_compute_pool")
    pool = _materialize("transcription_compute_pool", None, resources, instance)
    print(
        f"      {_value(pool, 'address')}: {_value(pool, 'nodes')} node(s), "
        f"{_value(pool, 'cpus')} CPU, {_value(pool, 'gpus')} GPU"
    )
    batch = librispeech_batch_key(subset)
    print(f"[3/3] transcripts[{batch}]")
    ops = {k: v for k, v in {"model": model, "engine": engine}.items() if v}
    run_config = {"ops": {"transcripts": {"config": ops}}} if ops else None
    meta = _materialize("transcripts", batch, resources, instance, run_config)
    wall = time.perf_counter() - started
    compute = resources["compute"]
    model_id = model_id_for(model or compute.default_model)
    report = resources["store"].batch_report([batch], model_id)
    if _value(meta, "status") == "cached":
        print(f"      nothing to transcribe: every file already has a transcript for {model_id}")
    else:
        print(
            f"      job transcribed {_value(meta, 'files')} files in "
            f"{_value(meta, 'wall_seconds')} s ({_value(meta, 'x_real_time')}x real time)"
        )
    print()
    print(f"Summary for batch {batch}, model {model_id}")
    print(f"  files in batch     {report.files}")
    print(f"  audio minutes      {report.audio_s / 60:.2f}")
    print(f"  ok / error         {report.ok} / {report.errors}")
    print(f"  demo wall time     {wall:.1f} s")
    if _value(meta, "x_real_time") is not None:
        print(f"  job x-real-time    {_value(meta, 'x_real_time')}")
    if report.wer is not None:
        print(f"  WER                {report.wer * 100:.2f} % over {report.wer_files} files")
    print(f"  table              {resources['store'].describe()} (transcripts)")
    print("Sample rows:")
    for row in report.samples[:3]:
        print(f"  {row['file_path']}\n    hyp: {row['text']}\n    ref: {row['reference']}")
    for row in report.error_samples[:3]:
        print(f"  ERROR {row['file_path']}: {row['error']}")
    return 0


def stop() -> int:
    from .profiles import local_resources, local_settings

    compute = local_resources(local_settings())["compute"]
    if compute.stop():
        print(f"stopped the Ray head this project started ({compute.dashboard_url})")
    else:
        print("no Ray head started by this project is running")
    return 0


def query(sql: str) -> int:
    import duckdb

    from .profiles import local_settings

    path = local_settings().warehouse_path
    if not path.exists():
        raise SystemExit(f"{path} does not exist yet: run `make demo` first")
    with duckdb.connect(str(path), read_only=True) as con:
        con.sql(sql).show(max_width=200, max_rows=50)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audio_pipeline.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="ingest a subset, ensure the pool, transcribe, summarize")
    d.add_argument("--subset", default=os.environ.get("SUBSET") or "sample")
    d.add_argument("--model", default=None)
    d.add_argument("--engine", default=None, choices=["transformers", "ctranslate2"])
    sub.add_parser("stop", help="stop the local Ray head this project started")
    q = sub.add_parser("query", help="run a read-only SQL query on the local warehouse")
    q.add_argument("sql")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.subset, args.model, args.engine)
    if args.command == "query":
        return query(args.sql)
    return stop()


if __name__ == "__main__":
    sys.exit(main())
