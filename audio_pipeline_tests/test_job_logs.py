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
