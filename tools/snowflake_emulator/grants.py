"""Roles, ownership and grants: who created what, GRANT, SHOW GRANTS TO ROLE, CURRENT_ROLE().

Snowflake's documented model, as far as this project's setup and preflight use it: the role that
creates an object owns it; system roles inherit (ACCOUNTADMIN → SYSADMIN, SECURITYADMIN →
USERADMIN); ``GRANT ... ON ALL TABLES IN SCHEMA`` covers the tables that exist, ``ON FUTURE
TABLES`` the tables created later and needs MANAGE GRANTS (ACCOUNTADMIN and SECURITYADMIN hold
it by default, SYSADMIN does not).
"""

from __future__ import annotations

import re

from . import grammar
from .wire import _denied, _not_found, _qualify, norm_ident, split_name

SYSTEM_ROLES = {
    "ACCOUNTADMIN": ("SYSADMIN", "SECURITYADMIN"),
    "SECURITYADMIN": ("USERADMIN",),
    "SYSADMIN": (),
    "USERADMIN": (),
    "PUBLIC": (),
}
MANAGE_GRANTS_ROLES = {"ACCOUNTADMIN", "SECURITYADMIN"}

_OBJECT = r"COMPUTE\s+POOL|DATABASE|SCHEMA|WAREHOUSE|STAGE|TABLE|INTEGRATION"
_GRANT = re.compile(
    r"GRANT\s+(?P<privs>.+?)\s+ON\s+(?:(?P<scope>ALL|FUTURE)\s+TABLES\s+IN\s+SCHEMA|"
    rf"(?P<kind>{_OBJECT}))\s+(?P<name>\S+)\s+TO\s+ROLE\s+(?P<role>[^\s;]+)",
    re.I | re.S,
)
_GRANT_ROLE = re.compile(r"GRANT\s+ROLE\s+(\S+)\s+TO\s+ROLE\s+([^\s;]+)", re.I)
_CREATE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?P<temp>(?:LOCAL\s+|GLOBAL\s+)?(?:TEMPORARY|TEMP|VOLATILE)\s+)?"
    r"(?:TRANSIENT\s+)?(?P<kind>DATABASE|SCHEMA|STAGE|TABLE|WAREHOUSE|EXTERNAL\s+ACCESS\s+"
    r"INTEGRATION|NETWORK\s+RULE)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[^\s(;]+)",
    re.I,
)


_ALTER_TABLE = re.compile(r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?([^\s;]+)", re.I)


def _kind(word: str) -> str:
    word = " ".join(word.upper().split())
    if word.endswith("INTEGRATION"):
        return "INTEGRATION"
    return word.replace(" ", "_")


class GrantsMixin:
    owners: dict
    grants: set
    future_grants: list

    def _grants_init(self) -> None:
        if not hasattr(self, "owners"):
            self.owners = {}  # (kind, name) -> owner role
            self.grants = set()  # (privilege, kind, name, grantee role)
            self.future_grants = []  # (privileges, schema name, grantee role)

    def _fqn(self, kind: str, raw: str, conn) -> str:
        parts = split_name(raw)
        if kind in ("TABLE", "STAGE"):
            return ".".join(_qualify(parts, conn))
        if kind == "SCHEMA":
            if len(parts) == 1:
                parts = [norm_ident(conn.database or ""), parts[0]]
            return ".".join(parts)
        return parts[-1]

    def _record_owner(self, sql: str, token, role: str | None = None) -> None:
        """The role that creates an object owns it (CREATE ... IF NOT EXISTS: the first one)."""
        m = _CREATE.match(sql)
        if not m or m.group("temp"):
            return
        import fakesnow.server as fs

        self._grants_init()
        kind = _kind(m.group("kind"))
        try:
            conn = fs.to_conn(token)
        except Exception:
            conn = None
        name = self._fqn(kind, m.group("name"), conn) if conn is not None else m.group("name")
        owner = role or self.roles.get(token, self.default_role)
        with self._lock:
            if (kind, name) in self.owners:
                return
            self.owners[(kind, name)] = owner
            if kind == "TABLE":
                schema = name.rsplit(".", 1)[0]
                for privs, target, grantee in self.future_grants:
                    if target == schema:
                        self.grants.update((p, "TABLE", name, grantee) for p in privs)

    def _ownership_denied(self, sql: str, token):
        """ALTER TABLE needs the table's OWNERSHIP (held by the role or one it inherits)."""
        m = _ALTER_TABLE.match(sql)
        if not m:
            return None
        import fakesnow.server as fs

        try:
            name = self._fqn("TABLE", m.group(1), fs.to_conn(token))
        except Exception:
            return None
        owner = self.owners.get(("TABLE", name))
        role = self.roles.get(token, self.default_role)
        if owner is None or owner in self._effective_roles(role):
            return None
        return _denied(f"table '{name}' (ALTER TABLE needs OWNERSHIP, held by {owner})")

    def _effective_roles(self, role: str) -> set[str]:
        self._grants_init()
        seen, todo = set(), [role]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo += SYSTEM_ROLES.get(current, ())
            todo += [n for p, k, n, r in self.grants if k == "ROLE" and r == current]
        return seen

    def _record_grant(self, text: str, ctx) -> None:
        self._grants_init()
        m = _GRANT_ROLE.match(text)
        if m:
            with self._lock:
                self.grants.add(("USAGE", "ROLE", norm_ident(m.group(1)), norm_ident(m.group(2))))
            return
        m = _GRANT.match(text)
        if not m:
            return
        privs = tuple(" ".join(p.split()).upper() for p in m.group("privs").split(","))
        grantee = norm_ident(m.group("role"))
        if m.group("scope"):
            schema = self._fqn("SCHEMA", m.group("name"), ctx.conn)
            if m.group("scope").upper() == "FUTURE":
                if not self._effective_roles(ctx.role) & MANAGE_GRANTS_ROLES:
                    raise _denied(f"schema '{schema}' (GRANT ON FUTURE needs MANAGE GRANTS)")
                with self._lock:
                    self.future_grants.append((privs, schema, grantee))
                return
            with self._lock:
                tables = [n for k, n in self.owners if k == "TABLE" and n.startswith(schema + ".")]
                self.grants.update((p, "TABLE", t, grantee) for p in privs for t in tables)
            return
        kind = _kind(m.group("kind"))
        name = self._fqn(kind, m.group("name"), ctx.conn)
        with self._lock:
            self.grants.update((p, kind, name, grantee) for p in privs)

    def _current(self, match, sql, params, ctx):
        return ["CURRENT_ROLE()", "CURRENT_USER()"], [[ctx.role, "FAKE"]]

    def _show_grants_to_role(self, match, sql, params, ctx):
        """``SHOW GRANTS TO ROLE r``: what ``r`` holds itself (inherited roles as ROLE rows)."""
        self._grants_init()
        grammar.check(sql)
        role = norm_ident(sql[match.end() :].strip().rstrip(";"))
        known = set(SYSTEM_ROLES) | {r for *_, r in self.grants} | set(self.owners.values())
        if role not in known:
            raise _not_found("Role", role)
        rows = [("USAGE", "ROLE", child) for child in SYSTEM_ROLES.get(role, ())]
        with self._lock:
            rows += [("OWNERSHIP", k, n) for (k, n), owner in self.owners.items() if owner == role]
            rows += [("OWNERSHIP", "COMPUTE_POOL", p.name) for p in self.pools.values()
                     if p.owner == role]  # fmt: skip
            rows += sorted((p, k, n) for p, k, n, r in self.grants if r == role)
        columns = ["created_on", "privilege", "granted_on", "name", "granted_to", "grantee_name",
                   "grant_option", "granted_by"]  # fmt: skip
        out = [["2026-01-01 00:00:00.000 +0000", p, k, n, "ROLE", role, "false", "ACCOUNTADMIN"]
               for p, k, n in rows]  # fmt: skip
        return columns, out
