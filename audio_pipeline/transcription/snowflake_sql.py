"""Running ``sql/snowflake/<verb_object>.sql`` files: names rendered, values bound.

Templates mark values ``%(name)s``. They are bound in whatever parameter style the connection
uses: ``pyformat`` (the connector's default: client-side, with a dict) or ``qmark``/``numeric``
(server-side, positional), which is what a Snowpark session's connection uses, and so what
``get_active_session()`` gives inside an ML Job. A list or tuple value expands to one bound value
per element (``VALUE_LIST = (%(hosts)s)``).

Imports nothing from Dagster: the ML Job payload runs these statements too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from .identifiers import render, split_statements
from .sql import load_sql

DIALECT = "snowflake"
_PARAM = re.compile(r"%\((\w+)\)s")
POSITIONAL_STYLES = frozenset({"qmark", "numeric"})


def statements(name: str, **names: object) -> list[str]:
    """The statements of ``sql/snowflake/<name>.sql`` with every ``{name}`` quoted."""
    return split_statements(render(load_sql(DIALECT, name), **names))


def paramstyle(cursor) -> str:
    """The parameter style of the cursor's connection (``pyformat`` when it does not say)."""
    conn = getattr(cursor, "connection", None)
    style = getattr(conn, "_paramstyle", None) or getattr(conn, "paramstyle", None)
    return str(style or "pyformat").lower()


def bind(stmt: str, params: Mapping | None, style: str) -> tuple[str, object]:
    """``(statement, parameters)`` for ``cursor.execute`` in ``style``.

    ``pyformat``/``format``: the statement as is and a dict. ``qmark``/``numeric``: every
    ``%(name)s`` replaced by ``?`` (``:n``) and the values in order of appearance.
    """
    if params is None or "%(" not in stmt:
        return stmt, None
    missing = sorted({m for m in _PARAM.findall(stmt) if m not in params})
    if missing:
        raise KeyError(f"SQL statement needs values for {missing}")
    if style not in POSITIONAL_STYLES:
        return stmt, {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()}
    values: list = []

    def marker(match: re.Match) -> str:
        value = params[match.group(1)]
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items:
            raise ValueError(f"{match.group(1)}: an empty list cannot be bound")
        marks = []
        for item in items:
            values.append(item)
            marks.append("?" if style == "qmark" else f":{len(values)}")
        return ", ".join(marks)

    return _PARAM.sub(marker, stmt), values


def execute(cursor, name: str, params: Mapping | None = None, **names: object) -> list[tuple]:
    """Run every statement of a file with ``params`` bound; rows of the last one."""
    rows: list[tuple] = []
    style = paramstyle(cursor)
    for stmt in statements(name, **names):
        cursor.execute(*bind(stmt, params, style))
        rows = _fetch(cursor)
    return rows


def execute_statement(cursor, stmt: str, params: Mapping | None = None):
    """One rendered statement with ``params`` bound in the cursor's style."""
    return cursor.execute(*bind(stmt, params, paramstyle(cursor)))


def executemany(cursor, name: str, rows: Sequence[Mapping], **names: object) -> int:
    """Run a one-statement file for each row (the connector batches multi-row INSERTs)."""
    if not rows:
        return 0
    (stmt,) = statements(name, **names)
    style = paramstyle(cursor)
    if style in POSITIONAL_STYLES:
        sql, _ = bind(stmt, rows[0], style)
        order = _PARAM.findall(stmt)
        cursor.executemany(sql, [tuple(r[k] for k in order) for r in rows])
    else:
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
