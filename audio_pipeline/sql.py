"""SQL statements live in ``sql/<dialect>/<verb_object>.sql`` at the repository root."""

from __future__ import annotations

import functools
from pathlib import Path

SQL_ROOT = Path(__file__).resolve().parent.parent / "sql"


@functools.cache
def load_sql(dialect: str, name: str) -> str:
    path = SQL_ROOT / dialect / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"missing SQL file {path}")
    return path.read_text()
