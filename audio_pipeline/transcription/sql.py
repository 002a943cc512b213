"""SQL statements live in ``sql/<dialect>/<verb_object>.sql`` at the repository root.

A wheel and the job's bundle carry them inside this package as ``sql_files/`` (setup.py,
``resources/compute/bundle.py``); a source checkout or an editable install reads the top-level
``sql/`` directly.
"""

from __future__ import annotations

import functools
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
SQL_ROOT = next(
    (p for p in (_PACKAGE / "sql_files", _PACKAGE.parents[1] / "sql") if p.is_dir()),
    _PACKAGE.parents[1] / "sql",
)


@functools.cache
def load_sql(dialect: str, name: str) -> str:
    path = SQL_ROOT / dialect / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"missing SQL file {path}")
    return path.read_text()
