"""Directory tables and the streams on them, as Snowflake's documentation describes them.

* A stage's directory table changes only when it is refreshed (``ALTER STAGE ... REFRESH``): a
  refresh takes a snapshot of the stage's files; ``DIRECTORY(@stage)`` reads the last snapshot
  (the live files for a stage never refreshed, as this emulator always answered before).
* ``CREATE STREAM s ON STAGE st`` keeps an offset: the directory table as it was then.
  ``SYSTEM$STREAM_HAS_DATA('s')`` compares it with the current directory table; a DML statement
  that reads the stream (MERGE/INSERT ... FROM s) sees the net changes since the offset
  (``METADATA$ACTION`` INSERT or DELETE, an update being both) and, once it succeeds, moves the
  offset to now: the stream is consumed.
* ``SHOW TABLES LIKE 'x' IN SCHEMA db.sch`` with the table's real row count (fakesnow says 0).

https://docs.snowflake.com/en/user-guide/data-load-dirtables-manage,
https://docs.snowflake.com/en/user-guide/streams-intro,
https://docs.snowflake.com/en/sql-reference/functions/system_stream_has_data
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time

from . import grammar
from .wire import (
    SnowflakeError,
    _bucket_dir,
    _inline,
    _like,
    _not_found,
    _qualify,
    _stage_parts,
    parse_literals,
    split_name,
)

# path -> (size, modified: naive UTC, md5)
Snapshot = dict[str, tuple[int, dt.datetime, str]]


def _files(root) -> Snapshot:
    out: Snapshot = {}
    for p in sorted(root.rglob("*")) if root.exists() else []:
        if p.is_file():
            st = p.stat()
            # whole seconds: what DIRECTORY() answers here (an HTTP date), stream rows alike
            modified = dt.datetime.fromtimestamp(int(st.st_mtime), dt.UTC).replace(tzinfo=None)
            out[p.relative_to(root).as_posix()] = (
                st.st_size,
                modified,
                hashlib.md5(p.read_bytes()).hexdigest(),
            )
    return out


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat(sep=' ')}'::TIMESTAMP_NTZ"
    return "'" + str(value).replace("'", "''") + "'"


class DirectoryMixin:
    def _directory_init(self) -> None:
        self.directories: dict[tuple[str, str, str], Snapshot] = {}
        self.streams: dict[tuple[str, str, str], dict] = {}  # name -> {"stage", "offset"}

    def _snapshot(self, key) -> Snapshot:
        if key in self.directories:
            return self.directories[key]
        return _files(_bucket_dir(*key))  # never refreshed: the live files

    def _refresh_stage(self, match, sql, params, ctx):
        text = _inline(sql, params)
        grammar.check(text)
        m = re.match(r"ALTER\s+STAGE\s+(\S+)\s+REFRESH", text, re.I)
        key = _qualify(split_name(m.group(1)), ctx.conn)
        if not self._stage_known(ctx, *key):
            raise _not_found("Stage", ".".join(key))
        old = self.directories.get(key, {})
        new = _files(_bucket_dir(*key))
        with self._lock:
            self.directories[key] = new
        rows = [[p, "REGISTERED_NEW", "File registered successfully."] for p in new if p not in old]
        rows += [[p, "REGISTERED_UPDATE", "File registered successfully."]
                 for p in new if p in old and old[p] != new[p]]  # fmt: skip
        rows += [[p, "REMOVED", "File removed successfully."] for p in old if p not in new]
        return ["file", "status", "description"], rows

    def _directory(self, match, sql, params, ctx):
        """``SELECT RELATIVE_PATH, SIZE, LAST_MODIFIED, MD5 FROM DIRECTORY(@stage) WHERE
        RELATIVE_PATH LIKE p [AND ... LAST_MODIFIED ... > t] [AND RELATIVE_PATH > a] ORDER BY
        RELATIVE_PATH [LIMIT n]``: the directory table as of the stage's last refresh."""
        text = _inline(sql, params)
        stage = re.search(r"DIRECTORY\s*\(\s*(@[^)\s]+)\s*\)", text, re.I).group(1)
        like = re.search(r"RELATIVE_PATH\s+LIKE\s+('(?:[^']|'')*')", text, re.I)
        since = re.search(
            r"LAST_MODIFIED\)?(?:::TIMESTAMP_NTZ)?\s*>\s*('(?:[^']|'')*')", text, re.I
        )
        after = re.search(r"RELATIVE_PATH\s*>\s*('(?:[^']|'')*')", text, re.I)
        limit = re.search(r"\bLIMIT\s+(\d+)", text, re.I)
        pattern = parse_literals(like.group(1))[0] if like else "%"
        newer = None
        if since:
            newer = dt.datetime.fromisoformat(parse_literals(since.group(1))[0].replace(" ", "T"))
        db, schema, name, *_ = _stage_parts(stage, ctx.conn)
        if not self._stage_known(ctx, db, schema, name):
            raise _not_found("Stage", f"{db}.{schema}.{name}")
        first = parse_literals(after.group(1))[0] if after else None
        rows = []
        for rel, (size, modified, md5) in sorted(self._snapshot((db, schema, name)).items()):
            if not _like(rel, pattern) or (first is not None and rel <= first):
                continue
            if newer is not None and modified.replace(tzinfo=None) <= newer:
                continue
            stamp = modified.strftime("%a, %d %b %Y %H:%M:%S GMT")
            rows.append([rel, size, stamp, md5])
            if limit and len(rows) >= int(limit.group(1)):
                break
        return ["RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "MD5"], rows

    # ---------------------------------------------------------------- streams
    def _create_stream(self, match, sql, params, ctx):
        text = _inline(sql, params)
        grammar.check(text)
        m = re.match(
            r"CREATE\s+(OR\s+REPLACE\s+)?STREAM\s+(IF\s+NOT\s+EXISTS\s+)?(\S+)\s+ON\s+STAGE\s+(\S+)",
            text,
            re.I,
        )
        if m is None:
            raise SnowflakeError(1003, "SQL compilation error: CREATE STREAM ... ON STAGE only")
        name = _qualify(split_name(m.group(3)), ctx.conn)
        stage = _qualify(split_name(m.group(4)), ctx.conn)
        if not self._stage_known(ctx, *stage):
            raise _not_found("Stage", ".".join(stage))
        with self._lock:
            if name in self.streams and not m.group(1):
                if m.group(2):
                    return ["status"], [[f"{name[2]} already exists, statement succeeded."]]
                raise SnowflakeError(2002, f"SQL compilation error:\nObject '{name[2]}' exists.")
            self.streams[name] = {"stage": stage, "offset": dict(self._snapshot(stage))}
        return ["status"], [[f"Stream {name[2]} successfully created."]]

    def _stream(self, ref: str, ctx) -> tuple[tuple[str, str, str], dict]:
        name = _qualify(split_name(ref), ctx.conn)
        if name not in self.streams:
            raise _not_found("Stream", ".".join(name))
        return name, self.streams[name]

    def _changes(self, stream: dict) -> list[list]:
        """The stream's net changes: (path, size, modified, md5, action, is_update)."""
        offset, now = stream["offset"], self._snapshot(stream["stage"])
        rows = []
        for path, (size, modified, md5) in sorted(now.items()):
            if offset.get(path) != (size, modified, md5):
                update = path in offset
                rows.append([path, size, modified, md5, "INSERT", update])
                if update:
                    old = offset[path]
                    rows.append([path, old[0], old[1], old[2], "DELETE", True])
        rows += [[p, *offset[p], "DELETE", False] for p in sorted(offset) if p not in now]
        return rows

    def _stream_has_data(self, match, sql, params, ctx):
        ref = parse_literals(_inline(sql, params)[match.end() - 1 :])[0]
        _, stream = self._stream(ref, ctx)
        return ["SYSTEM$STREAM_HAS_DATA"], [[bool(self._changes(stream))]]

    def _consume_stream(self, match, sql, params, ctx):
        """A DML statement reading a stream: run by fakesnow on a table of the stream's rows;
        the offset moves to now once it succeeds."""
        text = _inline(sql, params)
        ref = re.search(r"\bFROM\s+((?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+)){0,2})", text)
        name, stream = self._stream(ref.group(1), ctx)
        changes = self._changes(stream)
        table = f"_STREAM_ROWS_{abs(hash(name)) % 10**8}"
        cur = ctx.conn.cursor()
        cur.execute(
            f"CREATE OR REPLACE TEMPORARY TABLE {table} (RELATIVE_PATH VARCHAR, SIZE NUMBER, "
            "LAST_MODIFIED TIMESTAMP_NTZ, MD5 VARCHAR, METADATA_ACTION VARCHAR, "
            "METADATA_ISUPDATE BOOLEAN)"
        )
        if changes:
            values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in changes)
            cur.execute(f"INSERT INTO {table} VALUES {values}")
        rewritten = (
            (text[: ref.start(1)] + table + text[ref.end(1) :])
            .replace("METADATA$ACTION", "METADATA_ACTION")
            .replace("METADATA$ISUPDATE", "METADATA_ISUPDATE")
        )
        cur.execute(rewritten)
        result = cur.fetchall()
        columns = [d[0] for d in cur.description] if cur.description else ["status"]
        with self._lock:
            stream["offset"] = dict(self._snapshot(stream["stage"]))
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        return columns, [list(r) for r in result] or [[0] * len(columns)]

    def _show_tables_like(self, match, sql, params, ctx):
        """``SHOW TABLES LIKE 'x' IN SCHEMA db.sch`` with each table's real row count."""
        text = _inline(sql, params)
        m = re.match(r"SHOW\s+TABLES\s+LIKE\s+('(?:[^']|'')*')\s+IN\s+SCHEMA\s+(\S+)", text, re.I)
        pattern = parse_literals(m.group(1))[0]
        db, schema = split_name(m.group(2).rstrip(";"))[-2:]
        cur = ctx.conn.cursor()
        cur.execute(
            "SELECT table_name FROM information_schema.tables "
            f"WHERE table_catalog = '{db}' AND table_schema = '{schema}'"
        )
        names = [r[0] for r in cur.fetchall() if _like(r[0], pattern)]
        rows = []
        for table in names:
            cur.execute(f'SELECT COUNT(*) FROM "{db}"."{schema}"."{table}"')
            (count,) = cur.fetchone()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            rows.append([stamp, table, db, schema, "TABLE", "", int(count), int(count) * 1024])
        columns = ["created_on", "name", "database_name", "schema_name", "kind", "comment"]
        return [*columns, "rows", "bytes"], rows
