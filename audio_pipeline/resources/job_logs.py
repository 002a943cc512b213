"""What a remote job's output says to a person: its error and last log lines.

The raw output of a payload run under Dagster Pipes mixes Pipes protocol messages (JSON lines),
the payload's own lines, Python tracebacks and Ray's messages. Both the Ray and the Snowflake
clients turn it into a failure message with :func:`failure_message`, and drop Ray's known
harmless lines with :func:`is_noise`.
"""

from __future__ import annotations

import json
import re

PIPES_VERSION_FIELD = "__dagster_pipes_version"

# Printed by every healthy job, saying nothing about it. Ray Data always ray.put()s the function
# of an actor pool, and Ray's core worker then warns, at error level, that restarting such an
# actor needs those arguments: the driver holds them for the whole job (test_faults restarts one).
RAY_NOISE = (
    "has constructor arguments in the object store and max_restarts > 0",
    "Progress bars disabled. To enable, set",
)

_FRAME = re.compile(r'^\s+File "|^\s+\^+\s*$|^\s{4,}\S')


def is_noise(line: str) -> bool:
    return any(n in line for n in RAY_NOISE)


def pipes_message(line: str) -> dict | None:
    """The Pipes protocol message on this line, if it is one."""
    text = line.strip()
    if not (text.startswith("{") and PIPES_VERSION_FIELD in text):
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) and PIPES_VERSION_FIELD in message else None


def _exception_text(exc: dict) -> str:
    """``Name: message``; Pipes sends the message as ``package.module.Name: message``."""
    name = exc.get("name") or "Error"
    message = str(exc.get("message") or "").strip()
    head, sep, rest = message.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == name:
        message = rest
    return f"{name}: {message}"


def readable_output(text: str) -> tuple[str | None, list[str]]:
    """(the payload's error, if it reported one; its log lines, without protocol or frames)."""
    error: str | None = None
    lines: list[str] = []
    in_traceback = False
    for raw in text.splitlines():
        message = pipes_message(raw)
        if message is not None:
            params = message.get("params") or {}
            if message.get("method") == "log" and params.get("message"):
                lines.extend(str(params["message"]).splitlines())
            elif message.get("method") == "closed" and params.get("exception"):
                error = _exception_text(params["exception"])
            continue
        line = raw.rstrip()
        if not line.strip() or is_noise(line):
            continue
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback or _FRAME.match(line):
            if line[:1].isspace():
                continue
            in_traceback = False  # the exception line that ends a traceback
            error = error or line
            continue
        if line.startswith(("The above exception", "During handling of the above")):
            continue
        lines.append(line)
    return error, lines


def readable_tail(output: str, tail: int = 60) -> str:
    """The last ``tail`` readable log lines (for metadata)."""
    return "\n".join(readable_output(output)[1][-tail:])


def failure_message(what: str, status: str, output: str, tail: int = 15) -> str:
    """``<what> <status>: <the payload's error>`` and its last ``tail`` log lines."""
    error, lines = readable_output(output)
    lines = [ln for ln in lines if ln != error][-tail:]
    head = f"{what} {status}" + (f": {error}" if error else "")
    if not lines:
        return head
    return head + "\nlast log lines:\n" + "\n".join(f"  {ln}" for ln in lines)
