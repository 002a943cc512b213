"""fakesnow's HTTP app plus the login answers it leaves out (a test double at the REST layer).

Snowflake's login answer carries a ``masterToken`` and a ``sessionId``; fakesnow 0.12 sends
neither. Without a master token the real connector refuses to log out ("Connection is closed")
and keeps the connection open; Snowpark then closes the session again at interpreter exit,
against a server that is gone by then, and retries forever: a test process that never exits
(that is what held CI past its limit). With these two fields the connector logs out as it does
against a real account, and ``Session.close()`` sends ``SYSTEM$CANCEL_ALL_QUERIES(<id>)``.

``routes()`` is fakesnow's route list with the login answered through fakesnow plus those
fields, ``select system$cancel_all_queries(...)`` answered (fakesnow has no such function), and a
PUT's quoted stage location (``'@stage/p/'``, as Snowflake accepts it) unquoted for fakesnow.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gzip
import itertools
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator

_session_ids = itertools.count(1_000_001)
_CANCEL_ALL = re.compile(r"\s*select\s+system\$cancel_all_queries\s*\(", re.I)


async def login(request):
    import fakesnow.server as fs
    from starlette.responses import JSONResponse

    response = await fs.login_request(request)
    body = json.loads(response.body)
    if body.get("success"):
        body["data"]["masterToken"] = f"master-{body['data']['token']}"
        body["data"]["validityInSeconds"] = 3600
        body["data"]["masterValidityInSeconds"] = 14400
        body["data"]["sessionId"] = next(_session_ids)
    return JSONResponse(body, status_code=response.status_code)


async def query(request):
    """fakesnow's query endpoint, plus ``SYSTEM$CANCEL_ALL_QUERIES`` (what Session.close sends)."""
    import fakesnow.server as fs
    from starlette.responses import JSONResponse

    raw = await request.body()
    if request.headers.get("Content-Encoding") == "gzip":
        raw = gzip.decompress(raw)
    data = json.loads(raw)
    if _CANCEL_ALL.match(data.get("sqlText", "")):
        fs.to_conn(fs.to_token(request))  # a logged-in session only, as Snowflake
        return JSONResponse(cancel_all_answer())
    return await fs.query_request(unquoted_put(request, data))


def unquote_put_target(sql: str) -> str:
    """``PUT 'file://x' '@stage/p'`` → ``PUT 'file://x' @stage/p`` (fakesnow reads the target as a
    bare name only; Snowflake accepts both, and the pipeline quotes it)."""
    m = re.match(r"(\s*PUT\s+('[^']*'|\S+)\s+)'(@[^']*)'", sql, re.I | re.S)
    if not m:
        return sql
    return m.group(1) + m.group(3) + sql[m.end() :]


def with_body(request, body: bytes):
    """The same request with another body (starlette reads it through ``receive``)."""
    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


def unquoted_put(request, data: dict):
    """The request, its PUT target unquoted for fakesnow when it was quoted."""
    sql = data.get("sqlText", "")
    rewritten = unquote_put_target(sql)
    if rewritten == sql:
        return request
    raw = json.dumps(data | {"sqlText": rewritten}).encode()
    if request.headers.get("Content-Encoding") == "gzip":
        raw = gzip.compress(raw)
    return with_body(request, raw)


def cancel_all_answer() -> dict:
    return {
        "data": {
            "rowtype": [
                {
                    "name": "SYSTEM$CANCEL_ALL_QUERIES",
                    "type": "text",
                    "nullable": True,
                    "length": None,
                    "precision": None,
                    "scale": None,
                    "byteLength": None,
                },
            ],  # fmt: skip
            "rowset": [["0 queries cancelled"]],
            "total": 1,
            "queryResultFormat": "json",
            "queryId": "01cancel-0000-0000-0000-000000000000",
            "statementTypeId": 4096,
        },
        "success": True,
    }


@functools.cache
def remove_bucket_at_exit() -> None:
    """fakesnow keeps stage files in one temporary folder per process, made when it is imported,
    and never removes it: this process removes it when it exits."""
    from fakesnow.transforms import stage

    atexit.register(shutil.rmtree, stage.LOCAL_BUCKET_PATH, True)


def routes() -> list:
    """fakesnow's routes with the login and the query endpoint above."""
    import logging

    import fakesnow.server as fs
    from starlette.routing import Route

    remove_bucket_at_exit()

    # fakesnow logs every login and upload at INFO (it sets that level on import): too chatty
    logging.getLogger("fakesnow.server").setLevel(logging.WARNING)

    replaced = {"/session/v1/login-request", "/queries/v1/query-request"}
    out = [r for r in fs.routes if r.path not in replaced]
    out.append(Route("/session/v1/login-request", login, methods=["POST"]))
    out.append(Route("/queries/v1/query-request", query, methods=["POST"]))
    return out


@contextlib.contextmanager
def server() -> Iterator[dict]:
    """What ``fakesnow.server()`` does, on the routes above; yields connection kwargs."""
    import uvicorn
    from starlette.applications import Starlette

    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(Starlette(routes=routes()), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, name="fakesnow server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fakesnow server did not start")
        time.sleep(0.05)
    try:
        yield {
            "user": "fake",
            "password": "snow",
            "account": "fakesnow",
            "host": "127.0.0.1",
            "port": port,
            "protocol": "http",
            "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
            "network_timeout": 1,
        }
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
