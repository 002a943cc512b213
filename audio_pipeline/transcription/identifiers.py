"""Snowflake identifiers from config: validated, then quoted; the only way names reach SQL text.

Values never go through here: they are bound parameters (connector ``pyformat``). Names cannot be
bound, so every ``{placeholder}`` of a ``sql/snowflake`` template is filled by :func:`render`,
which accepts only names that follow Snowflake's unquoted-identifier rules (letter or underscore,
then letters, digits, ``_`` or ``$``; at most 255 characters) and quotes them upper-cased, which
is exactly how Snowflake resolves the unquoted name. Anything else is rejected with a clear error.
This module imports nothing from Dagster: the payload uses it too.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,254}")
_KEYWORD = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_HOST = re.compile(r"(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
_STAGE_PATH = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*")


class InvalidIdentifierError(ValueError):
    """A configured name is not a valid Snowflake identifier (or keyword, host, stage path)."""


def validate(name: object, what: str = "identifier") -> str:
    """``name`` if it is a valid unquoted Snowflake identifier; raises otherwise."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidIdentifierError(
            f"invalid Snowflake {what} {name!r}: use a letter or underscore followed by letters, "
            "digits, '_' or '$' (at most 255 characters); quotes, spaces, dots and semicolons "
            "are not accepted"
        )
    return name


def quote(name: object, what: str = "identifier") -> str:
    """``"NAME"``: validated, upper-cased (as Snowflake resolves unquoted names) and quoted."""
    return f'"{validate(name, what).upper()}"'


def qualified(*parts: object) -> str:
    """``"DB"."SCHEMA"."NAME"`` from validated parts."""
    if not parts:
        raise InvalidIdentifierError("an object name needs at least one part")
    return ".".join(quote(p) for p in parts)


@dataclass(frozen=True)
class Keyword:
    """A bare upper-case keyword value in DDL (``INSTANCE_FAMILY = GPU_NV_S``)."""

    value: str

    def __str__(self) -> str:
        if not isinstance(self.value, str) or not _KEYWORD.fullmatch(self.value):
            raise InvalidIdentifierError(
                f"invalid Snowflake keyword value {self.value!r}: upper-case letters, digits "
                "and '_' only"
            )
        return self.value


def validate_host(host: str) -> str:
    """A DNS host name (network rules); ``host:port`` is not accepted here."""
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise InvalidIdentifierError(f"invalid host name {host!r}")
    return host.lower()


def validate_stage_path(path: str, what: str = "stage path") -> str:
    """A stage-relative path such as ``dev-clean/84/121123`` (no quotes, spaces or ``..``)."""
    path = path.strip("/") if isinstance(path, str) else path
    if (
        not isinstance(path, str)
        or not _STAGE_PATH.fullmatch(path)
        or ".." in path.split("/")
        or len(path) > 1024
    ):
        raise InvalidIdentifierError(
            f"invalid {what} {path!r}: letters, digits, '_', '-', '.' and '/' only"
        )
    return path


def _render_value(key: str, value: object) -> str:
    if isinstance(value, Keyword):
        return str(value)
    if isinstance(value, tuple):
        return qualified(*value)
    return quote(value, what=f"identifier for {{{key}}}")


def render(template: str, **names: object) -> str:
    """Fill ``{placeholders}`` with quoted identifiers (str), qualified names (tuple) or Keywords.

    ``%(param)s`` markers are left for the connector to bind.
    """
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    missing = fields - set(names)
    if missing:
        raise KeyError(f"SQL template needs names for {sorted(missing)}")
    return template.format_map({k: _render_value(k, v) for k, v in names.items() if k in fields})


def split_statements(sql: str) -> list[str]:
    """Statements of a SQL file: split at ``;`` that ends a line; ``--`` comment lines dropped."""
    out, current = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(current).strip().rstrip(";").strip()
            if stmt:
                out.append(stmt)
            current = []
    tail = "\n".join(current).strip().rstrip(";").strip()
    if tail:
        out.append(tail)
    return out


def names_of(values: Iterable[str], what: str = "identifier") -> list[str]:
    return [validate(v, what) for v in values]
