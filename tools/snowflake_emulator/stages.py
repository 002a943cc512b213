"""Stage reads fakesnow lacks: LIST of a path, GET, presigned URLs (directory: directory.py)."""

from __future__ import annotations

import re
import time

from .wire import (
    SnowflakeError,
    _bucket_dir,
    _not_found,
    _stage_parts,
    parse_literals,
)


class StagesMixin:
    # ---------------------------------------------------------------- LIST, GET, presigned URLs
    def _presigned(self, match, sql, params, ctx):
        """``GET_PRESIGNED_URL(@stage, 'path', lifetime)`` (one file, as the payload asks) or
        over a VALUES list of names (as SFStageFileSystem asks): URLs this server answers with
        the file's bytes; NULL for a file that does not exist."""
        m = re.search(
            r"get_presigned_url\s*\(\s*(?:'([^']+)'|(@[^,\s]+))\s*,\s*(\?|'(?:[^']|'')*'|\w+)",
            sql,
            re.I,
        )
        if m is None:
            raise SnowflakeError(1003, "SQL compilation error: GET_PRESIGNED_URL arguments")
        stage = m.group(1) or m.group(2)
        arg = m.group(3)
        if arg == "?":
            names = [str(params[0])]
        elif arg.startswith("'"):
            names = parse_literals(arg)
        else:
            values = re.search(r"\bVALUES\b", sql, re.I)
            names = parse_literals(sql[values.end() :]) if values else []
        db, schema, name, *_ = _stage_parts(stage, ctx.conn)
        if not self._stage_known(ctx, db, schema, name):
            raise _not_found("Stage", f"{db}.{schema}.{name}")
        rows = []
        for file in names:
            rel = file.lstrip("/")
            target = _bucket_dir(db, schema, name) / rel
            url = f"http://127.0.0.1:{self.port}/presigned/{db}/{schema}/{name}/{rel}"
            rows.append([file, url if target.is_file() else None])
        if arg == "?" or arg.startswith("'"):
            return ["GET_PRESIGNED_URL"], [[rows[0][1]]]
        return ["NAME", "URL"], rows

    def _list_path(self, match, sql, params, ctx):
        """``LIST @stage/path/``: the files under a path (fakesnow lists whole stages only)."""
        m = re.match(r"(?:LIST|LS)\s+'?(@[^'\s]+)'?", sql, re.I)
        db, schema, stage, *rest = _stage_parts(m.group(1), ctx.conn)
        if not self._stage_known(ctx, db, schema, stage):
            raise _not_found("Stage", f"{db}.{schema}.{stage}")
        root = _bucket_dir(db, schema, stage)
        prefix = "/".join(rest)
        rows = []
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel.startswith(prefix):
                st = p.stat()
                modified = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(st.st_mtime))
                rows.append([f"{stage.lower()}/{rel}", st.st_size, "", modified])
        return ["name", "size", "md5", "last_modified"], rows

    def _remove(self, match, sql, params, ctx):
        """``REMOVE @stage/path/``: the files under a path (fakesnow has no REMOVE)."""
        m = re.match(r"(?:REMOVE|RM)\s+'?(@[^'\s;]+)'?", sql, re.I)
        db, schema, stage, *rest = _stage_parts(m.group(1), ctx.conn)
        if not self._stage_known(ctx, db, schema, stage):
            raise _not_found("Stage", f"{db}.{schema}.{stage}")
        root = _bucket_dir(db, schema, stage)
        prefix = "/".join(rest)
        rows = []
        for p in sorted(root.rglob("*"), reverse=True):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel.startswith(prefix):
                p.unlink()
                rows.append([f"{stage.lower()}/{rel}", "removed"])
            elif p.is_dir() and rel.startswith(prefix) and not any(p.iterdir()):
                p.rmdir()
        return ["name", "result"], rows

    def _blocked(self, stage: str) -> bool:
        """Reads of this stage fail from everywhere (``block_stage_reads``: a blocked route)."""
        return stage.upper() in {s.upper() for s in self.block_stage_reads}

    def _get(self, match, sql, params, ctx):
        m = re.match(r"GET\s+('([^']+)'|(\S+))\s+('([^']+)'|(\S+))", sql, re.I)
        if not m:
            raise SnowflakeError(1003, "SQL compilation error: syntax error in GET")
        source = m.group(2) or m.group(3)
        target = m.group(5) or m.group(6)
        db, schema, stage, *rest = _stage_parts(source, ctx.conn)
        root = _bucket_dir(db, schema, stage)
        if not self._stage_known(ctx, db, schema, stage):
            raise _not_found("Stage", f"{db}.{schema}.{stage}")
        if self._blocked(stage):
            raise SnowflakeError(253003, f"GET from @{stage}: connection to the stage's storage "
                                 "timed out")  # fmt: skip
        prefix = "/".join(rest)
        base = root / prefix
        if base.is_file():
            files = [prefix]
        else:
            files = sorted(
                p.relative_to(root).as_posix()
                for p in root.rglob("*")
                if p.is_file() and p.relative_to(root).as_posix().startswith(prefix)
            )
        local = target[len("file://") :] if target.startswith("file://") else target
        return {
            "command": "DOWNLOAD",
            "src_locations": files,
            "localLocation": local,
            "parallel": 4,
            "encryptionMaterial": [],
            "stageInfo": {"locationType": "LOCAL_FS", "location": str(root), "creds": {}},
        }
