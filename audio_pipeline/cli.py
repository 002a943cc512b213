"""Command line: ``python -m audio_pipeline.cli demo|stop|query``.

``demo`` materializes the three assets for one LibriSpeech subset on the active profile, in the
Dagster instance at ``DAGSTER_HOME`` (so the runs show up in ``make dev``), then prints a summary
read back from the transcript table.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import re
import sys
import time
from pathlib import Path

import dagster as dg

from .partitions import librispeech_batch_key

EPHEMERAL_JOB = "__ephemeral_asset_job__"


def _instance():
    from .profiles import dagster_home

    home = dagster_home()
    if home:
        from .run_health import write_instance_yaml

        # No telemetry (nothing leaves this machine), the transcription pool.
        write_instance_yaml(home)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


class CliError(Exception):
    """A failure the user can act on: printed in a line or two, the traceback only with --debug."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail  # the full error chain, for --debug


# Dagster's wrappers around the exception an asset raised: the cause is what the user needs.
_WRAPPERS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError")


def user_message(error) -> str:
    """The innermost meaningful message of a ``SerializableErrorInfo`` chain, without class path."""
    while error.cls_name in _WRAPPERS and (error.cause or error.context):
        error = error.cause or error.context
    message = error.message.strip()
    prefix, sep, rest = message.partition(": ")
    if sep and prefix.rsplit(".", 1)[-1] == error.cls_name:
        message = rest
    if error.cls_name not in ("Failure", "LibriSpeechError", "ComputePoolError", "CliError"):
        message = f"{error.cls_name}: {message}"
    return message


PROGRESS = re.compile(r"^progress: (\d+)/(\d+) files, (.*)$")


class _DemoLogHandler(logging.Handler):
    """Prints what assets and the payload log, one indented line each, and the payload's
    progress as a bar; skips Dagster's own events."""

    def __init__(self, stream):
        super().__init__(logging.INFO)
        self.stream = stream
        self.bar = None

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        meta = getattr(record, "dagster_meta", None) or {}
        if meta.get("dagster_event") is not None:
            return  # step/run events: failures are summarized by the CLI itself
        message = str(meta.get("orig_message") or record.getMessage())
        if message.startswith("[pipes]") or not message.strip():
            return
        if match := PROGRESS.match(message):
            done, total = int(match[1]), int(match[2])
            if self.bar is None:
                self.bar = tqdm(
                    total=total,
                    unit="file",
                    file=self.stream,
                    leave=True,
                    desc="      transcribing",
                )
            self.bar.set_postfix_str(match[3], refresh=False)
            self.bar.update(done - self.bar.n)
            if done >= total:
                self.bar.close()
                self.bar = None
            return
        line = f"      {message.splitlines()[0]}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()


def _demo_logger(stream) -> dg.LoggerDefinition:
    @dg.logger(description="make demo: asset and payload messages, one line each")
    def demo(_init_context) -> logging.Logger:
        logger = logging.Logger("audio_pipeline.demo", logging.INFO)
        logger.addHandler(_DemoLogHandler(stream))
        return logger

    return demo


def materialize(
    selection: str,
    partition_key: str | None,
    *,
    resources: dict,
    instance,
    run_config: dict | None = None,
    debug: bool = False,
    log_path: Path | None = None,
):
    """Materialize one asset in-process; a failure raises :class:`CliError` with its cause.

    Without ``debug`` only asset and payload messages reach the terminal; everything else
    (Dagster's events, the job's own output) goes to ``log_path``.
    """
    from .definitions import ASSETS

    run_config = dict(run_config or {})
    if debug:
        loggers = None
        run_config["loggers"] = {"console": {"config": {"log_level": "DEBUG"}}}
    else:
        loggers = {"demo": _demo_logger(sys.stdout)}
        run_config["loggers"] = {"demo": {}}
    defs = dg.Definitions(
        assets=ASSETS,
        jobs=[dg.define_asset_job(EPHEMERAL_JOB, selection=[selection])],
        resources=resources,
        loggers=loggers,
    )
    job = defs.resolve_job_def(EPHEMERAL_JOB)
    with contextlib.ExitStack() as stack:
        if not debug and log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(open(log_path, "a", encoding="utf-8"))
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(out))
        result = job.execute_in_process(
            run_config=run_config,
            instance=instance,
            partition_key=partition_key,
            raise_on_error=False,
        )
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        if not failures:
            raise CliError(f"materializing {selection} failed", None)
        error = failures[0].step_failure_data.error
        raise CliError(user_message(error), error.to_string())
    mats = result.asset_materializations_for_node(selection)
    return mats[-1].metadata if mats else {}


def _log_path(instance) -> Path | None:
    root = getattr(instance, "root_directory", None)
    return Path(root) / "demo.log" if root else None


def _value(meta: dict, key: str):
    v = meta.get(key)
    return getattr(v, "value", v)


def demo(
    subset: str,
    model: str | None,
    engine: str | None,
    debug: bool = False,
    instance: dg.DagsterInstance | None = None,
) -> int:
    from .profiles import resources_for
    from .transcription.librispeech import LibriSpeechError, get_subset
    from .transcription.models import model_id_for

    resources = resources_for()
    try:
        # A local mirror's own subsets (LIBRISPEECH_MIRROR=../shared/data/realspeech: dev-real).
        get_subset(subset, resources["librispeech_source"].mirror)
    except LibriSpeechError as exc:
        raise CliError(str(exc)) from None
    instance = instance or _instance()
    log_path = _log_path(instance)
    started = time.perf_counter()

    run = functools.partial(
        materialize, resources=resources, instance=instance, debug=debug, log_path=log_path
    )
    print(f"[1/3] librispeech_audio[{subset}] → stage {resources['stage'].describe()}")
    ingest = run("librispeech_audio", subset)
    print(
        f"      {_value(ingest, 'files')} files, {_value(ingest, 'copied')} copied, "
        f"{_value(ingest, 'audio_hours') * 60:.1f} audio minutes"
    )
    print("[2/3] transcription_compute_pool")
    pool = run("transcription_compute_pool", None)
    if _value(pool, "nodes") is not None:  # a Ray cluster
        print(
            f"      {_value(pool, 'address')}: {_value(pool, 'nodes')} node(s), "
            f"{_value(pool, 'cpus')} CPU, {_value(pool, 'gpus')} GPU"
        )
    else:  # a Snowflake compute pool
        print(
            f"      {_value(pool, 'address')}: {_value(pool, 'state')}, "
            f"{_value(pool, 'min_nodes')}-{_value(pool, 'max_nodes')} "
            f"{_value(pool, 'instance_family')} node(s)"
        )
    batch = librispeech_batch_key(subset)
    print(f"[3/3] transcripts[{batch}]")
    ops = {k: v for k, v in {"model": model, "engine": engine}.items() if v}
    run_config = {"ops": {"transcripts": {"config": ops}}} if ops else None
    meta = run("transcripts", batch, run_config=run_config)
    wall = time.perf_counter() - started
    compute = resources["compute"]
    model_id = model_id_for(model or compute.default_model)
    # Outside a run, a resource's EnvVar settings resolve only through its own initialization.
    with resources["store"].process_config_and_initialize_cm() as store:
        report = store.batch_report([batch], model_id)
        table = store.describe()
    if _value(meta, "status") == "cached":
        print(f"      nothing to transcribe: every file already has a transcript for {model_id}")
    else:
        print(
            f"      job transcribed {_value(meta, 'transcribed_now')} files in "
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
    print(f"  table              {table} (transcripts)")
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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print tracebacks and Dagster's full log (make demo DEBUG=1)",
    )
    parser = argparse.ArgumentParser(prog="python -m audio_pipeline.cli", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo", parents=[common], help="ingest a subset, ensure the pool, transcribe, summarize"
    )
    d.add_argument("--subset", default="sample")
    d.add_argument("--model", default=None)
    d.add_argument("--engine", default=None, choices=["transformers", "ctranslate2"])
    sub.add_parser("stop", parents=[common], help="stop the local Ray head this project started")
    q = sub.add_parser(
        "query", parents=[common], help="run a read-only SQL query on the local warehouse"
    )
    q.add_argument("sql")
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        if args.command == "demo":
            return demo(args.subset, args.model, args.engine, debug=debug)
        if args.command == "query":
            return query(args.sql)
        return stop()
    except CliError as exc:
        if debug and exc.detail:
            print(exc.detail, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        if exc.detail and not debug:
            print(
                "(for the traceback: run again with --debug, or make demo DEBUG=1)",
                file=sys.stderr,
            )
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
