"""Which statements need a running warehouse, as Snowflake's documentation describes it.

Cloud services alone answer metadata statements: ``SHOW``, ``DESCRIBE``, ``LIST``, ``USE``,
``ALTER SESSION``, DDL (``CREATE``/``ALTER``/``DROP``, ``GRANT``), ``ALTER STAGE ... REFRESH``
(billed as cloud services: https://docs.snowflake.com/en/user-guide/data-load-dirtables), file
transfers (``PUT``/``GET``), and a ``SELECT`` of system or context functions with no ``FROM``,
such as ``SYSTEM$STREAM_HAS_DATA`` ("This check can help avoid starting or resuming a warehouse";
the function diffs table version metadata:
https://docs.snowflake.com/en/sql-reference/functions/system_stream_has_data). Queries that read
tables and DML (``SELECT ... FROM``, ``INSERT``, ``MERGE``, ``UPDATE``, ``DELETE``, ``COPY``,
``CREATE ... AS SELECT``) and ``CALL`` run on a warehouse, resuming it if it is suspended.
"""

from __future__ import annotations

import re

_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_CLOUD = re.compile(
    r"(SHOW|DESC|DESCRIBE|LIST|LS|USE|GRANT|REVOKE|PUT|GET|DROP|COMMIT|ROLLBACK|BEGIN)\b"
    r"|ALTER\s+SESSION\b|ALTER\s+STAGE\b|ALTER\s+(COMPUTE\s+POOL|WAREHOUSE|NETWORK\s+RULE)\b"
    r"|CREATE\b(?!.*\bAS\s+SELECT\b)|ALTER\s+TABLE\b",
    re.I | re.S,
)
_METADATA_FUNCTION = re.compile(r"\b(SYSTEM\$\w+|CURRENT_\w+)\s*\(", re.I)


def needs_warehouse(sql: str) -> bool:
    """True when ``sql`` runs on a warehouse (so resumes a suspended one)."""
    text = _COMMENT.sub(" ", sql).strip().lstrip("(").strip()
    if _CLOUD.match(text):
        return False
    if re.match(r"SELECT\b", text, re.I) and not re.search(r"\bFROM\b", text, re.I):
        calls = re.findall(r"\b([\w$]+)\s*\(", text)
        return not calls or not all(_METADATA_FUNCTION.match(f"{c}(") for c in calls)
    return True
