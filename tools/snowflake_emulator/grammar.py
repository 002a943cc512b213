"""The documented grammar of the Snowflake statements sqlglot cannot parse, as regular expressions.

Written from the SQL reference pages (docs.snowflake.com/en/sql-reference/sql/...):

* CREATE COMPUTE POOL [ IF NOT EXISTS ] <name> MIN_NODES = <num> MAX_NODES = <num>
  INSTANCE_FAMILY = <instance_family_name> [ AUTO_RESUME = { TRUE | FALSE } ]
  [ INITIALLY_SUSPENDED = { TRUE | FALSE } ] [ AUTO_SUSPEND_SECS = <num> ] [ COMMENT = '<string>' ]
* ALTER COMPUTE POOL [ IF EXISTS ] <name> SET [ MIN_NODES = <num> ] [ MAX_NODES = <num> ]
  [ AUTO_RESUME = { TRUE | FALSE } ] [ AUTO_SUSPEND_SECS = <num> ] [ COMMENT = '<string>' ]
  (also { SUSPEND | RESUME | STOP ALL })
* DESCRIBE | DESC COMPUTE POOL <name>
* CREATE [ OR REPLACE ] NETWORK RULE [ IF NOT EXISTS ] <name> TYPE = { IPV4 | HOST_PORT | ... }
  VALUE_LIST = ( '<value>' [ , '<value>', ... ] ) MODE = { INGRESS | INTERNAL_STAGE | EGRESS }
  [ COMMENT = '<string_literal>' ]   (properties in any order)
* ALTER NETWORK RULE [ IF EXISTS ] <name> SET VALUE_LIST = ( [ '<value>' [ , ... ] ] )
* CREATE [ OR REPLACE ] EXTERNAL ACCESS INTEGRATION [ IF NOT EXISTS ] <name>
  ALLOWED_NETWORK_RULES = ( <rule_name> [ , <rule_name> ... ] ) ENABLED = { TRUE | FALSE } ...
* ALTER STAGE [ IF EXISTS ] <name> REFRESH [ SUBPATH = '<relative-path>' ]
* GRANT <privileges> ON { COMPUTE POOL | INTEGRATION | DATABASE | WAREHOUSE | SCHEMA | STAGE |
  ALL TABLES IN SCHEMA | FUTURE TABLES IN SCHEMA } <name> TO ROLE <role>
* CREATE WAREHOUSE [ IF NOT EXISTS ] <name> [ [ WITH ] objectProperties ]
* CREATE [ OR REPLACE ] STREAM [ IF NOT EXISTS ] <name> [ COPY GRANTS ] ON STAGE <stage_name>
  [ COMMENT = '<string_literal>' ]   (a stream on a directory table)
* SHOW [ JOB ] SERVICES [ EXCLUDE JOBS ] [ LIKE '<pattern>' ] [ IN { ACCOUNT | DATABASE [ <name> ]
  | SCHEMA [ <name> ] | <name> | COMPUTE POOL <name> } ] [ STARTS WITH '<string>' ]
  [ LIMIT <rows> [ FROM '<string>' ] ]
* SHOW GRANTS TO ROLE <role>
* CALL SYSTEM$GET_ML_JOB_RUNTIME( '<compute_pool>', '<runtime selector>' ) (the ML Jobs SDK's call)

``check`` raises ``GrammarError`` for a statement of one of these kinds that does not match; it
returns False for a statement of another kind (which sqlglot parses).
"""

from __future__ import annotations

import re

IDENT = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)'
NAME = rf"{IDENT}(?:\.{IDENT}){{0,2}}"
NUM = r"\d+"
BOOL = r"(?:TRUE|FALSE)"
STRING = r"'(?:[^'\\]|\\.|'')*'"
HOST_PORT = r"'[A-Za-z0-9.*-]+(?::\d{1,5})?'"


def _props(*alternatives: str) -> str:
    """Any order, each at most once is not enforced: one or more of the alternatives."""
    return r"(?:\s+(?:" + "|".join(alternatives) + r"))"


_POOL_PROPS = (
    rf"MIN_NODES\s*=\s*{NUM}",
    rf"MAX_NODES\s*=\s*{NUM}",
    r"INSTANCE_FAMILY\s*=\s*[A-Z0-9_]+",
    rf"AUTO_RESUME\s*=\s*{BOOL}",
    rf"INITIALLY_SUSPENDED\s*=\s*{BOOL}",
    rf"AUTO_SUSPEND_SECS\s*=\s*{NUM}",
    rf"COMMENT\s*=\s*{STRING}",
)
_ALTERABLE_POOL_PROPS = [p for p in _POOL_PROPS if not p.startswith(("INSTANCE", "INITIALLY"))]
_RULE_PROPS = (
    r"MODE\s*=\s*(?:INGRESS|INTERNAL_STAGE|EGRESS)",
    r"TYPE\s*=\s*(?:IPV4|AWSVPCEID|AZURELINKID|GCPPSCID|HOST_PORT|PRIVATE_HOST_PORT)",
    rf"VALUE_LIST\s*=\s*\(\s*(?:{HOST_PORT}(?:\s*,\s*{HOST_PORT})*)?\s*\)",
    rf"COMMENT\s*=\s*{STRING}",
)

GRAMMAR: dict[str, tuple[re.Pattern, re.Pattern]] = {
    # kind: (how to recognise the statement, what the documented grammar allows)
    "create compute pool": (
        re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?COMPUTE\s+POOL\b", re.I),
        re.compile(
            rf"CREATE\s+COMPUTE\s+POOL\s+(?:IF\s+NOT\s+EXISTS\s+)?{NAME}{_props(*_POOL_PROPS)}+",
            re.I,
        ),
    ),
    "alter compute pool": (
        re.compile(r"ALTER\s+COMPUTE\s+POOL\b", re.I),
        re.compile(
            rf"ALTER\s+COMPUTE\s+POOL\s+(?:IF\s+EXISTS\s+)?{NAME}\s+"
            rf"(?:SUSPEND|RESUME|STOP\s+ALL|SET{_props(*_ALTERABLE_POOL_PROPS)}+)",
            re.I,
        ),
    ),
    "describe compute pool": (
        re.compile(r"(DESCRIBE|DESC)\s+COMPUTE\s+POOL\b", re.I),
        re.compile(rf"(?:DESCRIBE|DESC)\s+COMPUTE\s+POOL\s+{NAME}", re.I),
    ),
    "create network rule": (
        re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?NETWORK\s+RULE\b", re.I),
        re.compile(
            rf"CREATE\s+(?:OR\s+REPLACE\s+)?NETWORK\s+RULE\s+(?:IF\s+NOT\s+EXISTS\s+)?{NAME}"
            rf"{_props(*_RULE_PROPS)}+",
            re.I,
        ),
    ),
    "alter network rule": (
        re.compile(r"ALTER\s+NETWORK\s+RULE\b", re.I),
        re.compile(
            rf"ALTER\s+NETWORK\s+RULE\s+(?:IF\s+EXISTS\s+)?{NAME}\s+SET\s+"
            rf"VALUE_LIST\s*=\s*\(\s*(?:{HOST_PORT}(?:\s*,\s*{HOST_PORT})*)?\s*\)"
            rf"(?:\s+COMMENT\s*=\s*{STRING})?",
            re.I,
        ),
    ),
    "create external access integration": (
        re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?EXTERNAL\s+ACCESS\s+INTEGRATION\b", re.I),
        re.compile(
            rf"CREATE\s+(?:OR\s+REPLACE\s+)?EXTERNAL\s+ACCESS\s+INTEGRATION\s+"
            rf"(?:IF\s+NOT\s+EXISTS\s+)?{NAME}"
            + _props(
                rf"ALLOWED_NETWORK_RULES\s*=\s*\(\s*{NAME}(?:\s*,\s*{NAME})*\s*\)",
                rf"ALLOWED_AUTHENTICATION_SECRETS\s*=\s*\(\s*(?:{NAME}(?:\s*,\s*{NAME})*|ALL|NONE)\s*\)",
                rf"ENABLED\s*=\s*{BOOL}",
                rf"COMMENT\s*=\s*{STRING}",
            )
            + "+",
            re.I,
        ),
    ),
    "alter stage refresh": (
        re.compile(r"ALTER\s+STAGE\b.*\bREFRESH\b", re.I | re.S),
        re.compile(
            rf"ALTER\s+STAGE\s+(?:IF\s+EXISTS\s+)?{NAME}\s+REFRESH(?:\s+SUBPATH\s*=\s*{STRING})?",
            re.I,
        ),
    ),
    "grant": (
        re.compile(r"GRANT\b", re.I),
        re.compile(
            r"GRANT\s+(?:[A-Z_]+(?:\s+[A-Z_]+)*)(?:\s*,\s*[A-Z_]+(?:\s+[A-Z_]+)*)*\s+ON\s+"
            r"(?:COMPUTE\s+POOL|INTEGRATION|DATABASE|WAREHOUSE|SCHEMA|STAGE|"
            r"(?:ALL|FUTURE)\s+(?:TABLES|STAGES)\s+IN\s+SCHEMA)\s+"
            rf"{NAME}\s+TO\s+ROLE\s+{IDENT}",
            re.I,
        ),
    ),
    "create warehouse": (
        re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?WAREHOUSE\b", re.I),
        re.compile(
            rf"CREATE\s+(?:OR\s+REPLACE\s+)?WAREHOUSE\s+(?:IF\s+NOT\s+EXISTS\s+)?{NAME}"
            r"(?:\s+WITH)?"
            + _props(
                r"WAREHOUSE_SIZE\s*=\s*'?[A-Z0-9]+'?",
                rf"AUTO_SUSPEND\s*=\s*{NUM}",
                rf"AUTO_RESUME\s*=\s*{BOOL}",
                rf"INITIALLY_SUSPENDED\s*=\s*{BOOL}",
                rf"COMMENT\s*=\s*{STRING}",
            )
            + "*",
            re.I,
        ),
    ),
    "create stream on stage": (
        re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?STREAM\b", re.I),
        re.compile(
            rf"CREATE\s+(?:OR\s+REPLACE\s+)?STREAM\s+(?:IF\s+NOT\s+EXISTS\s+)?{NAME}"
            rf"(?:\s+COPY\s+GRANTS)?\s+ON\s+STAGE\s+{NAME}(?:\s+COMMENT\s*=\s*{STRING})?",
            re.I,
        ),
    ),
    "show services": (
        re.compile(r"SHOW\s+(JOB\s+)?SERVICES\b", re.I),
        re.compile(
            rf"SHOW\s+(?:JOB\s+)?SERVICES(?:\s+EXCLUDE\s+JOBS)?(?:\s+LIKE\s+{STRING})?"
            rf"(?:\s+IN\s+(?:ACCOUNT|DATABASE(?:\s+{NAME})?|SCHEMA(?:\s+{NAME})?|"
            rf"COMPUTE\s+POOL\s+{NAME}|{NAME}))?(?:\s+STARTS\s+WITH\s+{STRING})?"
            rf"(?:\s+LIMIT\s+{NUM}(?:\s+FROM\s+{STRING})?)?",
            re.I,
        ),
    ),
    "show grants to role": (
        re.compile(r"SHOW\s+GRANTS\s+TO\s+ROLE\b", re.I),
        re.compile(rf"SHOW\s+GRANTS\s+TO\s+ROLE\s+{IDENT}", re.I),
    ),
    "call get ml job runtime": (
        re.compile(r"CALL\s+SYSTEM\$GET_ML_JOB_RUNTIME\b", re.I),
        re.compile(rf"CALL\s+SYSTEM\$GET_ML_JOB_RUNTIME\s*\(\s*{STRING}\s*,\s*{STRING}\s*\)", re.I),
    ),
}


class GrammarError(ValueError):
    pass


def kind_of(statement: str) -> str | None:
    text = statement.strip()
    for kind, (recognise, _) in GRAMMAR.items():
        if recognise.match(text):
            return kind
    return None


def check(statement: str) -> bool:
    """True when ``statement`` is of a kind above and matches its grammar; raises if it does not
    match; False when it is of no kind above."""
    text = statement.strip().rstrip(";").strip()
    kind = kind_of(text)
    if kind is None:
        return False
    if not GRAMMAR[kind][1].fullmatch(text):
        raise GrammarError(f"{kind}: does not match the documented grammar:\n{text}")
    return True
