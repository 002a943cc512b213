"""The one entry function of the payload, for a Ray Job and a Snowflake ML Job alike.

Under Dagster Pipes the job settings arrive in the extras (key ``job``); outside Pipes they can be
given as a JSON file with ``--settings``. What one path reports the other reports: the summary as
materialization metadata.
"""

from __future__ import annotations

import argparse
import json

from dagster_pipes import PipesContext, open_dagster_pipes

from . import environment, model_stage, snowflake_auth
from .models import resolve_model
from .pipeline import JobSummary, run_job
from .pipes_stage import payload_message_writer
from .settings import JobSettings


def markdown_preview(rows: list[dict]) -> str:
    lines = ["| file | status | text |", "|---|---|---|"]
    for r in rows:
        text = (r.get("text") or "").replace("|", "\\|")[:120]
        lines.append(f"| {r['file_path']} | {r['status']} | {text} |")
    return "\n".join(lines)


def summary_metadata(summary: JobSummary) -> dict:
    meta: dict = summary.metadata()
    if summary.preview:
        meta["preview"] = {"raw_value": markdown_preview(summary.preview), "type": "md"}
    if summary.error_samples:
        meta["error_samples"] = {"raw_value": "\n".join(summary.error_samples), "type": "text"}
    # Split per partition by the asset, which reports each partition's own figures.
    meta["files_by_batch"] = {"raw_value": summary.files_by_batch, "type": "json"}
    return meta


def prepare(settings: JobSettings, log_fn=print) -> JobSettings:
    """Resolve the model before any work starts: a missing model fails fast and clearly. A Hub
    model with a models stage is copied there once (from the Hub, on this node only) and the
    actors load it from the stage (``staged:`` model path)."""
    model = resolve_model(settings.model, settings.engine, settings.home)
    settings.model_path = model.path
    settings.model_id = settings.model_id or model.model_id
    settings.model_revision = settings.model_revision or model.revision
    if model.is_hub and settings.model_stage:
        staged = model_stage.staged_model(settings.model, settings.model_stage)
        conn = snowflake_auth.connect()
        try:
            model_stage.publish(conn, staged, home=settings.home, log=log_fn)
        finally:
            conn.close()
        settings.model_path = staged.model_path
    return settings


def report(pipes: PipesContext, summary: JobSummary) -> None:
    """The materialization, back through Pipes (the checks read the table in Dagster)."""
    pipes.report_asset_materialization(metadata=summary_metadata(summary))


def run_with_pipes(pipes: PipesContext) -> JobSummary:
    if snowflake_auth.in_container():  # what pip installed from requirements.txt
        pipes.log.info(environment.check())
    settings = prepare(JobSettings.from_extras(pipes.get_extra("job")), log_fn=pipes.log.info)
    summary = run_job(settings, log_fn=pipes.log.info)
    report(pipes, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audio_pipeline.transcription")
    parser.add_argument("--settings", help="JSON file of job settings (outside Dagster Pipes)")
    args = parser.parse_args(argv)
    if args.settings:
        with open(args.settings) as f:
            settings = prepare(JobSettings.from_extras(json.load(f)))
        summary = run_job(settings)
        print(json.dumps(summary_metadata(summary), default=str, indent=2))
        return 0
    # Messages: chunks on the job stage in an ML Job (see pipes_stage), stdout in a Ray Job.
    with open_dagster_pipes(message_writer=payload_message_writer()) as pipes:
        run_with_pipes(pipes)
    return 0
