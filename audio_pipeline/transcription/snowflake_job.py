"""ML Job entry point: ``python -m audio_pipeline.transcription.snowflake_job`` (under Pipes).

The same job as ``python -m audio_pipeline.transcription``, plus what a Snowflake ML Job needs:
the Whisper actor pool is sized from the cluster's GPUs and ``SNOWFLAKE_JOBS_COUNT`` (the nodes
the job asked for, which may still be joining), unless the asset fixed ``actors``.
"""

from __future__ import annotations

import logging
import os
import sys

from dagster_pipes import open_dagster_pipes

from .__main__ import prepare, summary_metadata
from .pipeline import JobSettings, run_job


def planned_actors(cluster_gpus: float, cluster_nodes: int, jobs_count: int | None) -> int | None:
    """Whisper actors for a GPU cluster: one per GPU of every node the job will have.

    None on a CPU-only cluster (the plan's own CPU sizing applies).
    """
    if cluster_gpus < 1:
        return None
    per_node = max(1, int(cluster_gpus // max(cluster_nodes, 1)))
    return max(int(cluster_gpus), (jobs_count or 0) * per_node)


def _cluster() -> tuple[float, int]:
    import ray

    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS", "auto"),
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return float(ray.cluster_resources().get("GPU", 0)), len(nodes)


def main() -> int:
    with open_dagster_pipes() as pipes:
        job = dict(pipes.get_extra("job"))
        jobs_count = (
            int(os.environ["SNOWFLAKE_JOBS_COUNT"])
            if os.environ.get("SNOWFLAKE_JOBS_COUNT")
            else None
        )
        if job.get("actors") is None:
            gpus, nodes = _cluster()
            job["actors"] = planned_actors(gpus, nodes, jobs_count)
            pipes.log.info(
                f"cluster now: {nodes} node(s), {gpus:.0f} GPU(s); SNOWFLAKE_JOBS_COUNT="
                f"{jobs_count}; actors: {job['actors'] or 'planned from CPUs'}"
            )
        settings = prepare(JobSettings.from_extras(job))
        summary = run_job(settings, log_fn=pipes.log.info)
        meta = summary_metadata(summary)
        if jobs_count is not None:
            meta["snowflake_jobs_count"] = jobs_count
        pipes.report_asset_materialization(metadata=meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
