"""Where the payload reads audio bytes from: a local stage folder or a Snowflake stage."""

from __future__ import annotations

import functools
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path

_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


def stage_path_of(name: str) -> str:
    """A file system path (``os.fsdecode``) as a stage path, valid UTF-8.

    Bytes that are not UTF-8 (kept by Python as lone surrogates, which no database can store)
    are written as ``\\xNN``; :func:`fs_path_of` undoes it.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def fs_path_of(stage_path: str) -> str:
    """The file system name of a stage path escaped by :func:`stage_path_of`."""
    raw = _ESCAPED_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]), stage_path.encode("utf-8"))
    return os.fsdecode(raw)


class AudioSource(ABC):
    @abstractmethod
    def read_bytes(self, file_path: str, max_bytes: int | None = None) -> bytes:
        """Read one stage-relative file; raises OSError/ValueError on failure."""


class LocalFolderSource(AudioSource):
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def resolve(self, file_path: str) -> Path:
        link = self.root / file_path
        if not Path(os.path.normpath(link)).is_relative_to(self.root):
            raise ValueError(f"{file_path!r} points outside the stage {self.root}")
        if not os.path.lexists(link) and "\\x" in file_path:
            link = self.root / fs_path_of(file_path)  # a name that is not valid UTF-8
        if not os.path.lexists(link):
            raise FileNotFoundError(f"{file_path}: no longer in the stage {self.root}")
        path = link.resolve()
        if link.is_symlink() and not path.exists():
            raise FileNotFoundError(
                f"{file_path}: a dangling symbolic link (its target {os.readlink(link)!r} "
                "does not exist)"
            )
        if not path.is_relative_to(self.root):
            raise ValueError(f"{file_path}: a link to {path}, outside the stage {self.root}")
        return path

    def read_bytes(self, file_path: str, max_bytes: int | None = None) -> bytes:
        path = self.resolve(file_path)
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise ValueError(f"{file_path}: {size} bytes exceeds the {max_bytes}-byte limit")
        return path.read_bytes()


def open_source(spec: dict) -> AudioSource:
    kind = spec.get("kind")
    if kind == "local":
        return LocalFolderSource(spec["root"])
    if kind == "snowflake_stage":
        return SnowflakeStageSource(spec["database"], spec["schema"], spec["stage"])
    raise ValueError(f"unknown audio source kind {kind!r}")


class SnowflakeStageSource(AudioSource):
    """Files of a Snowflake stage, read over pre-signed URLs (``GET_PRESIGNED_URL``, one query and
    one HTTPS GET per file, nothing on disk).

    The connection is the job's own (see ``sinks.open_payload_connection``), one per process,
    reused by every decode task. ``fs`` (an fsspec file system, e.g. ``SFStageFileSystem``)
    replaces the URL reads where given.
    """

    URL_LIFETIME_S = 3600

    def __init__(self, database: str, schema: str, stage: str, fs=None):
        from . import identifiers

        self.database = identifiers.validate(database, "database name")
        self.schema = identifiers.validate(schema, "schema name")
        self.stage = identifiers.validate(stage, "stage name")
        self._fs = fs

    def presigned_url(self, path: str) -> str:
        from . import snowflake_sql

        conn = _stage_connection(self.database, self.schema)
        rows = snowflake_sql.execute(
            conn.cursor(),
            "select_presigned_url",
            {"path": path, "lifetime_s": self.URL_LIFETIME_S},
            stage=(self.database, self.schema, self.stage),
        )
        if not rows or not rows[0][0]:
            raise FileNotFoundError(f"@{self.stage}/{path}: no such file on the stage")
        return str(rows[0][0])

    def read_bytes(self, file_path: str, max_bytes: int | None = None) -> bytes:
        import urllib.request

        from . import identifiers

        path = identifiers.validate_stage_path(file_path)
        limit = -1 if max_bytes is None else max_bytes + 1  # one byte past: no huge reads
        if self._fs is not None:
            with self._fs.open(path, "rb") as f:
                data = f.read(limit)
        else:
            url = self.presigned_url(path)
            if not url.startswith(("https://", "http://")):
                raise ValueError(f"unexpected pre-signed URL scheme for {file_path}")
            with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310
                data = response.read(limit) if limit >= 0 else response.read()
        if max_bytes is not None and len(data) > max_bytes:
            raise ValueError(f"{file_path}: exceeds the {max_bytes}-byte limit")
        return data


@functools.cache
def _stage_connection(database: str, schema: str):
    from .sinks import open_payload_connection

    conn, _ = open_payload_connection(database, schema)
    return conn


@functools.cache
def _stage_fs(database: str, schema: str, stage: str):
    from snowflake.ml.fileset.stage_fs import SFStageFileSystem

    from .sinks import open_payload_connection

    conn, _ = open_payload_connection(database, schema)
    return SFStageFileSystem(db=database, schema=schema, stage=stage, sf_connection=conn)


def stage_datasource(spec: dict, file_pattern: str = "*.flac"):
    """A Ray datasource over a whole stage when the container runtime ships one, else None.

    ``SFStageBinaryFileDataSource`` exists only in Snowflake's container runtime image; outside it
    the plan reads files one by one through :class:`SnowflakeStageSource`.
    """
    try:
        from snowflake.ml.ray.datasource import SFStageBinaryFileDataSource
    except ImportError:
        return None
    return SFStageBinaryFileDataSource(
        stage_location=f"@{spec['stage']}/",
        database=spec["database"],
        schema=spec["schema"],
        file_pattern=file_pattern,
    )
