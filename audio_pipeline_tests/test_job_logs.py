"""A failed job's output, as the Ray and Snowflake clients read it, into a message for a person."""

import json
import traceback

from audio_pipeline.resources.job_logs import failure_message, is_noise, readable_output


def pipes_line(method: str, params: dict) -> str:
    return json.dumps({"__dagster_pipes_version": "0.1", "method": method, "params": params})


def failed_job_output() -> str:
    try:
        raise FileNotFoundError("model directory /models/tiny.en does not exist")
    except FileNotFoundError as exc:
        stack = traceback.format_exc()
        exception = {
            "name": type(exc).__name__,
            "message": f"builtins.{type(exc).__name__}: {exc}\n",
            "stack": traceback.format_tb(exc.__traceback__),
            "cause": None,
            "context": None,
        }
    return "\n".join(
        [
            "Running entrypoint for job transcripts-1: python -m audio_pipeline.transcription",
            pipes_line("opened", {"extras": {}}),
            pipes_line("log", {"message": "22 file(s) to transcribe", "level": "INFO"}),
            "[2026-11-25 19:39:41,176 E 30190 30190] core_worker.cc:2465: Actor with class name: "
            "'MapWorker' has constructor arguments in the object store and max_restarts > 0.",
            pipes_line("log", {"message": "loading the model", "level": "INFO"}),
            pipes_line("closed", {"exception": exception}),
            stack,
        ]
    )


def test_failure_message_is_the_error_and_the_log_lines_without_protocol_or_frames():
    message = failure_message("Ray job transcripts-1", "FAILED", failed_job_output())
    assert message.splitlines() == [
        "Ray job transcripts-1 FAILED: FileNotFoundError: model directory /models/tiny.en "
        "does not exist",
        "last log lines:",
        "  Running entrypoint for job transcripts-1: python -m audio_pipeline.transcription",
        "  22 file(s) to transcribe",
        "  loading the model",
    ]
    assert "__dagster_pipes_version" not in message and 'File "' not in message


def test_an_uncaught_traceback_without_pipes_still_yields_the_exception_line():
    try:
        {}["x"]
    except KeyError:
        output = "starting\n" + traceback.format_exc()
    error, lines = readable_output(output)
    assert error == "KeyError: 'x'" and lines == ["starting"]


def test_noise_lines():
    assert is_noise("2026 WARNING __init__.py:28 -- Progress bars disabled. To enable, set `x`")
    assert not is_noise("progress: 10/22 files")


def test_the_ray_log_tail_stops_at_the_payloads_closed_message():
    """Ray's job agent keeps the tail open for seconds after the job ends; the reader stops at
    Pipes' "closed", the last message that matters. The client below is Ray's HTTP tail (the
    lowest layer), fed the lines a job prints."""
    import asyncio

    from audio_pipeline.resources.compute.local_ray import _QuietJobLogs

    closed_after = []

    class RayTail:
        async def tail_job_logs(self, job_id):
            try:
                yield pipes_line("opened", {"extras": {}})
                yield "progress\n" + pipes_line("closed", {}) + "\nshutting down"
                yield "never read"
            finally:
                closed_after.append(job_id)  # the websocket is closed, not left open

    async def read():
        return [chunk async for chunk in _QuietJobLogs(RayTail()).tail_job_logs("job-1")]

    chunks = asyncio.run(read())
    assert len(chunks) == 2 and '"closed"' in chunks[1]
    assert "never read" not in "".join(chunks)
    assert closed_after == ["job-1"]
