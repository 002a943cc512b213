"""Running ``sql/snowflake/<verb_object>.sql`` files: names rendered, values bound.

Imports nothing from Dagster: the ML Job payload runs these statements too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from .identifiers import render, split_statements
from .sql import load_sql

DIALECT = "snowflake"


def statements(name: str, **names: object) -> list[str]:
    """The statements of ``sql/snowflake/<name>.sql`` with every ``{name}`` quoted."""
    return split_statements(render(load_sql(DIALECT, name), **names))


def execute(cursor, name: str, params: Mapping | None = None, **names: object) -> list[tuple]:
    """Run every statement of a file with ``params`` bound; rows of the last one."""
    rows: list[tuple] = []
    for stmt in statements(name, **names):
        cursor.execute(stmt, dict(params) if params is not None and "%(" in stmt else None)
        rows = _fetch(cursor)
    return rows


def executemany(cursor, name: str, rows: Sequence[Mapping], **names: object) -> int:
    """Run a one-statement file for each row (the connector batches multi-row INSERTs)."""
    if not rows:
        return 0
    (stmt,) = statements(name, **names)
    cursor.executemany(stmt, [dict(r) for r in rows])
    return len(rows)


def json_list(values: Sequence[str]) -> str:
    """A list as JSON text, bound as one value and expanded with ``FLATTEN(PARSE_JSON(...))``."""
    return json.dumps([str(v) for v in values])


def _fetch(cursor) -> list[tuple]:
    try:
        return list(cursor.fetchall())
    except Exception:  # statements without a result set
        return []
