"""Compute pools: CREATE/ALTER/DESCRIBE/SHOW COMPUTE POOL with the grants setup gives."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from . import grammar
from .wire import (
    RUNTIME_IMAGE,
    SnowflakeError,
    _denied,
    _inline,
    _like,
    _not_found,
    parse_literals,
    split_name,
)


@dataclass
class ComputePool:
    name: str
    instance_family: str
    min_nodes: int = 1
    max_nodes: int = 1
    auto_resume: bool = True
    auto_suspend_secs: int = 3600
    state: str = "IDLE"
    owner: str = "ACCOUNTADMIN"
    grants: dict[str, set[str]] = field(default_factory=dict)

    def row(self, active: int = 0) -> dict:
        return {
            "name": self.name,
            "state": self.state,
            "min_nodes": self.min_nodes,
            "max_nodes": self.max_nodes,
            "instance_family": self.instance_family,
            "num_services": 0,
            "num_jobs": 0,
            "auto_suspend_secs": self.auto_suspend_secs,
            "auto_resume": str(self.auto_resume).lower(),
            "active_nodes": active,
            "idle_nodes": max(0, self.min_nodes - active),
            "target_nodes": max(self.min_nodes, active),
            "owner": self.owner,
        }


class PoolsMixin:
    # ---------------------------------------------------------------- compute pools
    def _pool_options(self, text: str) -> dict:
        return {k.upper(): v.strip("'") for k, v in re.findall(r"(\w+)\s*=\s*('[^']*'|\S+)", text)}

    def _create_pool(self, match, sql, params, ctx):
        text = _inline(sql, params)
        grammar.check(text)
        if self.create_pool_roles is not None and ctx.role not in self.create_pool_roles:
            raise _denied(f"account '{ctx.conn.database or 'EMULATED'}'")
        m = re.match(
            r"CREATE\s+COMPUTE\s+POOL\s+(IF\s+NOT\s+EXISTS\s+)?(\S+)(.*)", text, re.I | re.S
        )
        name = split_name(m.group(2))[-1]
        opts = self._pool_options(m.group(3))
        with self._lock:
            if name in self.pools:
                if not m.group(1):
                    raise SnowflakeError(
                        2002, f"SQL compilation error:\nObject '{name}' already exists."
                    )
                return ["status"], [[f"{name} already exists, statement succeeded."]]
            self.pools[name] = ComputePool(
                name=name,
                instance_family=opts.get("INSTANCE_FAMILY", "CPU_X64_XS"),
                min_nodes=int(opts.get("MIN_NODES", 1)),
                max_nodes=int(opts.get("MAX_NODES", 1)),
                auto_resume=opts.get("AUTO_RESUME", "TRUE").upper() == "TRUE",
                auto_suspend_secs=int(opts.get("AUTO_SUSPEND_SECS", 3600)),
                state="SUSPENDED"
                if opts.get("INITIALLY_SUSPENDED", "").upper() == "TRUE"
                else "IDLE",
                owner=ctx.role,
            )
        return ["status"], [[f"Compute Pool {name} successfully created."]]

    def _pool(self, text: str, ctx, needs: set[str]) -> ComputePool:
        name = split_name(text.split()[0].rstrip(";"))[-1]
        pool = self.pools.get(name)
        if pool is None or not self._may(pool, ctx.role, needs):
            raise _not_found("Compute pool", name)
        return pool

    def _may(self, pool: ComputePool, role: str, needs: set[str]) -> bool:
        if role in (pool.owner, "ACCOUNTADMIN"):
            return True
        return bool(pool.grants.get(role, set()) & needs)

    def _alter_pool(self, match, sql, params, ctx):
        text = _inline(sql, params)
        grammar.check(text)
        rest = text[match.end() :]
        pool = self._pool(rest, ctx, {"USAGE", "MONITOR", "MODIFY", "OPERATE"})
        opts = self._pool_options(rest)
        if set(opts) - {"SUSPEND", "RESUME"} and not self._may(pool, ctx.role, {"MODIFY"}):
            raise _denied(f"compute pool '{pool.name}'")
        with self._lock:
            for key, attr in (("MIN_NODES", "min_nodes"), ("MAX_NODES", "max_nodes")):
                if key in opts:
                    setattr(pool, attr, int(opts[key]))
            if "AUTO_RESUME" in opts:
                pool.auto_resume = opts["AUTO_RESUME"].upper() == "TRUE"
            if "AUTO_SUSPEND_SECS" in opts:
                pool.auto_suspend_secs = int(opts["AUTO_SUSPEND_SECS"])
        return ["status"], [["Statement executed successfully."]]

    def _describe_pool(self, match, sql, params, ctx):
        pool = self._pool(_inline(sql, params)[match.end() :], ctx, {"USAGE", "MONITOR"})
        row = pool.row(self._active_nodes(pool.name))
        return list(row), [list(row.values())]

    def _show_pools(self, match, sql, params, ctx):
        like = re.search(r"LIKE\s+('[^']*'|\?)", sql, re.I)
        pattern = None
        if like:
            pattern = params[0] if like.group(1) == "?" else parse_literals(like.group(1))[0]
        rows = []
        for pool in self.pools.values():
            if pattern and not _like(pool.name, pattern):
                continue
            if self._may(pool, ctx.role, {"USAGE", "MONITOR"}):
                rows.append(pool.row(self._active_nodes(pool.name)))
        columns = list(ComputePool("x", "x").row())
        return columns, [list(r.values()) for r in rows]

    def _active_nodes(self, pool: str) -> int:
        return sum(
            len(j.instances) for j in self.jobs.values() if j.pool == pool and j.status == "RUNNING"
        )

    def _runtime(self, match, sql, params, ctx):
        """The runtime image for a pool; with ``runtime_pythons`` set, only for a selector whose
        ``pythonVersion`` is one of them (the SDK sends the client's Python when runtime
        versions are enabled): else no image (NULL), as for a client Python with none."""
        grammar.check(_inline(sql, params))
        args = params or parse_literals(sql[match.end() :])
        selector = str(args[1]) if len(args) > 1 else ""
        if self.runtime_pythons is not None and selector.startswith("{"):
            python = json.loads(selector).get("pythonVersion")
            if python not in self.runtime_pythons:
                return ["SYSTEM$GET_ML_JOB_RUNTIME"], [[None]]
        return ["SYSTEM$GET_ML_JOB_RUNTIME"], [[RUNTIME_IMAGE]]
