"""The wire: Snowflake errors, names, literals, bindings and result sets for the connector."""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOG_CAP_BYTES = 100 * 1024  # SYSTEM$GET_SERVICE_LOGS returns at most the last 100 KB
EVENT_RECORD_CHARS = 2048  # the event-table log source splits long lines into records
RUNTIME_IMAGE = (
    "/snowflake/images/snowflake_images/st_plat/runtime/x86/generic_gpu/runtime_image/"
    "snowbooks:1.8.0"
)
STAGE_MOUNT = "/mnt/job_stage"


class SnowflakeError(Exception):
    def __init__(self, code: int, message: str, sqlstate: str = "42000"):
        super().__init__(message)
        self.code = code
        self.message = message
        self.sqlstate = sqlstate


def _not_found(kind: str, name: str) -> SnowflakeError:
    return SnowflakeError(
        2003, f"SQL compilation error:\n{kind} '{name}' does not exist or not authorized.", "02000"
    )


def _denied(what: str) -> SnowflakeError:
    return SnowflakeError(
        3001, f"SQL access control error:\nInsufficient privileges to operate on {what}"
    )


def norm_ident(part: str) -> str:
    part = part.strip()
    if part.startswith('"') and part.endswith('"'):
        return part[1:-1].replace('""', '"')
    return part.upper()


def split_name(name: str) -> list[str]:
    """``"DB".SCH.x`` → ``["DB", "SCH", "X"]`` (quotes honoured)."""
    parts, current, quoted = [], "", False
    for ch in name.strip():
        if ch == '"':
            quoted = not quoted
            current += ch
        elif ch == "." and not quoted:
            parts.append(norm_ident(current))
            current = ""
        else:
            current += ch
    parts.append(norm_ident(current))
    return parts


def parse_literals(text: str) -> list[str]:
    """The single-quoted string literals of ``text`` (backslash escapes and '' honoured)."""
    out, i = [], 0
    escapes = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "b": "\b", "Z": "\x1a"}
    while i < len(text):
        if text[i] != "'":
            i += 1
            continue
        i += 1
        buf = []
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                buf.append(escapes.get(text[i + 1], text[i + 1]))
                i += 2
            elif ch == "'" and text[i + 1 : i + 2] == "'":
                buf.append("'")
                i += 2
            elif ch == "'":
                i += 1
                break
            else:
                buf.append(ch)
                i += 1
        out.append("".join(buf))
    return out


@dataclass
class _Ctx:
    token: str
    conn: object
    role: str


def _strip_comments(sql: str) -> str:
    lines = [line for line in sql.strip().splitlines() if not line.strip().startswith("--")]
    return "\n".join(lines).strip()


def _bindings(bindings: dict | None) -> list:
    if not bindings:
        return []
    from fakesnow.converter import from_binding

    if all(k.isdigit() for k in bindings):
        return [from_binding(bindings[str(i)]) for i in range(1, len(bindings) + 1)]
    return list(from_binding(b) for b in bindings.values())


def _inline(sql: str, params: list) -> str:
    """``sql`` with ``?`` markers replaced by literals (to check the statement's text)."""
    if not params:
        return sql
    values = iter(params)

    def literal(_m):
        v = next(values)
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if isinstance(v, (int, float)):
            return str(v)
        return "'" + str(v).replace("'", "''") + "'"

    return re.sub(r"\?", literal, sql)


def _qualify(parts: list[str], conn) -> tuple[str, str, str]:
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return norm_ident(conn.database or ""), parts[0], parts[1]
    return norm_ident(conn.database or ""), norm_ident(conn.schema or ""), parts[0]


def _stage_parts(location: str, conn) -> list[str]:
    """``@DB.SCH.STAGE/a/b`` → ``[DB, SCH, STAGE, a, b]``."""
    location = location.strip().lstrip("@")
    name, _, path = location.partition("/")
    db, schema, stage = _qualify(split_name(name), conn)
    return [db, schema, stage, *[p for p in path.split("/") if p]]


def _bucket_dir(db: str, schema: str, stage: str) -> Path:
    from fakesnow.transforms import stage as fs_stage

    return Path(fs_stage.LOCAL_BUCKET_PATH) / db / schema / stage


def _like(name: str, pattern: str, case: bool = False) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, 0 if case else re.I) is not None


def _column(name: str, values: list) -> dict:
    numeric = (
        values
        and all(isinstance(v, int) and not isinstance(v, bool) for v in values if v is not None)
        and any(v is not None for v in values)
    )
    return {
        "name": name,
        "database": "",
        "schema": "",
        "table": "",
        "nullable": True,
        "type": "fixed" if numeric else "text",
        "byteLength": None if numeric else 16777216,
        "length": None if numeric else 16777216,
        "scale": 0 if numeric else None,
        "precision": 38 if numeric else None,
        "collation": None,
    }


def _result(columns: list[str], rows: list[list], conn) -> dict:
    rowtype = [_column(c, [r[i] for r in rows]) for i, c in enumerate(columns)]
    rowset = [
        [None if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in r]
        for r in rows
    ]
    return {
        "data": {
            "parameters": [{"name": "TIMEZONE", "value": "Etc/UTC"}],
            "rowtype": rowtype,
            "rowset": rowset,
            "total": len(rowset),
            "returned": len(rowset),
            "queryId": str(uuid.uuid4()),
            "queryResultFormat": "json",
            "statementTypeId": 4096,
            "finalDatabaseName": getattr(conn, "database", None),
            "finalSchemaName": getattr(conn, "schema", None),
        },
        "success": True,
    }


def _error(e: SnowflakeError) -> dict:
    code = f"{e.code:06d}"
    return {
        "data": {"errorCode": code, "sqlState": e.sqlstate},
        "code": code,
        "message": e.message,
        "success": False,
    }


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
