"""The audio stage: where audio files land before transcription."""

from __future__ import annotations

import os
import shutil
import stat as statmod
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from ..transcription import identifiers, snowflake_sql
from ..transcription.audio import SUPPORTED_EXTENSIONS
from ..transcription.librispeech import md5_of
from ..transcription.sources import stage_path_of
from .snowflake_connection import SnowflakeConnection


def is_audio_path(path: str) -> bool:
    """A supported extension, and no hidden component: macOS ``._*`` resource forks, ``.DS_Store``,
    ``.Trashes/``, our own ``.tmp-*`` copies and editors' hidden files are not audio."""
    parts = path.split("/")
    return path.lower().endswith(SUPPORTED_EXTENSIONS) and not any(p.startswith(".") for p in parts)


@dataclass(frozen=True)
class StageFile:
    path: str  # stage-relative, "/"-separated
    size_bytes: int
    last_modified: datetime
    md5: str | None = None


class AudioStage(dg.ConfigurableResource, ABC):
    """A place holding audio files, addressed by stage-relative paths."""

    @abstractmethod
    def list_files(self, prefix: str = "") -> Iterator[StageFile]:
        """Audio files under ``prefix`` (supported extensions only)."""

    def list_new_files(self, since: datetime | None, prefix: str = "") -> Iterator[StageFile]:
        """Files modified after ``since`` (all when None); backends may push the filter down."""
        for f in self.list_files(prefix):
            if since is None or f.last_modified > since:
                yield f

    @abstractmethod
    def put_file(self, local: Path, path: str) -> bool:
        """Copy ``local`` to ``path`` unless the same content is there; True when copied."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes: ...

    @abstractmethod
    def payload_spec(self) -> dict:
        """How the payload reaches this stage (``transcription.sources.open_source``)."""

    @abstractmethod
    def describe(self) -> str: ...


class LocalStage(AudioStage):
    """A folder on this machine."""

    root: str

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def _resolve(self, path: str) -> Path:
        full = (self.root_path / path).resolve()
        if not full.is_relative_to(self.root_path) or full == self.root_path:
            raise ValueError(f"stage path {path!r} escapes the stage {self.root_path}")
        return full

    def list_files(self, prefix: str = "") -> Iterator[StageFile]:
        return self.list_new_files(None, prefix)

    def list_new_files(self, since: datetime | None, prefix: str = "") -> Iterator[StageFile]:
        """Walk the folder; with ``since``, stat files only in directories changed after it.

        Adding or renaming a file updates its directory's modification time, so a directory
        older than ``since`` holds no new file and its files need no ``stat``. Subdirectories
        are still descended (their own times decide). A file overwritten in place does not
        touch its directory: such a change is found by the periodic full rescan.

        Hidden files and folders are skipped; so are FIFOs, sockets and devices. A name that is
        not valid UTF-8 is listed escaped (``transcription.sources.stage_path_of``). A folder
        that cannot be read is skipped, never an error: one odd entry never stops a listing.
        """
        base = self._resolve(prefix) if prefix else self.root_path
        if not base.is_dir():
            return
        cutoff = since.replace(tzinfo=UTC).timestamp() if since else None
        stack = [base]
        while stack:
            folder = stack.pop()
            try:
                changed = cutoff is None or folder.stat().st_mtime > cutoff
                entries = list(os.scandir(folder))
            except OSError:  # gone, or not readable
                continue
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                        continue
                    if not changed or not name.lower().endswith(SUPPORTED_EXTENSIONS):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if statmod.S_ISLNK(st.st_mode):
                        try:  # the target's size and time; a dangling link keeps its own
                            st = entry.stat(follow_symlinks=True)
                        except OSError:
                            pass
                    elif not statmod.S_ISREG(st.st_mode):
                        continue
                except OSError:
                    continue
                if cutoff is not None and st.st_mtime <= cutoff:
                    continue
                yield StageFile(
                    path=stage_path_of(Path(entry.path).relative_to(self.root_path).as_posix()),
                    size_bytes=st.st_size,
                    last_modified=datetime.fromtimestamp(st.st_mtime, UTC).replace(tzinfo=None),
                )

    def put_file(self, local: Path, path: str) -> bool:
        dest = self._resolve(path)
        if (
            dest.exists()
            and dest.stat().st_size == local.stat().st_size
            and (md5_of(dest) == md5_of(local))
        ):
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp-{os.getpid()}-{dest.name}")
        shutil.copyfile(local, tmp)
        os.replace(tmp, dest)  # readers never see a half-copied file
        return True

    def read_bytes(self, path: str) -> bytes:
        return self._resolve(path).read_bytes()

    def payload_spec(self) -> dict:
        return {"kind": "local", "root": str(self.root_path)}

    def describe(self) -> str:
        return str(self.root_path)


def _utc_naive(value) -> datetime:
    """A driver timestamp (aware or naive UTC) or a ``LIST`` date string as naive UTC."""
    if isinstance(value, str):
        from email.utils import parsedate_to_datetime

        value = parsedate_to_datetime(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


class SnowflakeStage(AudioStage):
    """An internal stage (``@AUDIO_FILES_STAGE``) with a directory table.

    Files keep the ``<subset>/<speaker>/<chapter>/`` layout. Listing reads the directory table
    (``ALTER STAGE ... REFRESH`` first) and falls back to ``LIST @stage`` where the directory
    table is unavailable.
    """

    connection: SnowflakeConnection
    stage_name: str = "AUDIO_FILES_STAGE"
    put_parallel: int = Field(default=4, ge=1, le=99, description="PUT's PARALLEL option")
    put_threads: int = Field(default=8, ge=1, le=64, description="concurrent PUTs in put_files")
    refresh_directory: bool = True
    _put_stack: ExitStack | None = PrivateAttr(default=None)
    _put_cursor: object = PrivateAttr(default=None)

    @property
    def stage_fqn(self) -> tuple[str, str, str]:
        return self.connection.object_name(self.stage_name)

    def _location(self, directory: str) -> str:
        base = "@" + identifiers.qualified(*self.stage_fqn)
        return f"{base}/{identifiers.validate_stage_path(directory)}/" if directory else base

    def put_command(self, local: Path, path: str) -> str:
        """``PUT 'file://...' @stage/<dir>/ AUTO_COMPRESS=FALSE OVERWRITE=FALSE PARALLEL=n``."""
        local_uri = Path(local).resolve().as_posix()
        if "'" in local_uri:
            raise ValueError(f"local path {local_uri!r} contains a quote")
        directory, _, _ = identifiers.validate_stage_path(path).rpartition("/")
        return (
            f"PUT 'file://{local_uri}' {self._location(directory)} "
            f"AUTO_COMPRESS=FALSE OVERWRITE=FALSE PARALLEL={int(self.put_parallel)}"
        )

    def _put(self, cursor, local: Path, path: str) -> bool:
        name = identifiers.validate_stage_path(path).rpartition("/")[2]
        if Path(local).name != name:  # PUT keeps the local name: stage a renamed copy
            with tempfile.TemporaryDirectory() as tmp:
                renamed = Path(tmp) / name
                shutil.copyfile(local, renamed)
                return self._put(cursor, renamed, path)
        cursor.execute(self.put_command(local, path))
        statuses = [str(r[6]).upper() for r in cursor.fetchall()]
        return "UPLOADED" in statuses

    def put_file(self, local: Path, path: str) -> bool:
        """One PUT on a connection kept open for the run (closed in teardown / ``close``)."""
        if self._put_cursor is None:
            self._put_stack = ExitStack()
            conn = self._put_stack.enter_context(self.connection.connect())
            self._put_cursor = conn.cursor()
        return self._put(self._put_cursor, Path(local), path)

    def close(self) -> None:
        if self._put_stack is not None:
            self._put_stack.close()
        self._put_stack = None
        self._put_cursor = None

    def teardown_after_execution(self, context) -> None:
        self.close()

    def put_files(self, items: list[tuple[Path, str]]) -> int:
        """PUT many files over ``put_threads`` connections; returns how many were uploaded."""
        from concurrent.futures import ThreadPoolExecutor

        if not items:
            return 0
        chunks = [items[i :: self.put_threads] for i in range(min(self.put_threads, len(items)))]

        def run(chunk):
            with self.connection.connect() as conn:
                cur = conn.cursor()
                return sum(self._put(cur, Path(local), path) for local, path in chunk)

        with ThreadPoolExecutor(len(chunks)) as pool:
            return sum(pool.map(run, chunks))

    def _from_directory(self, cursor, prefix: str, since: datetime | None) -> list[StageFile]:
        stage = self.stage_fqn
        if self.refresh_directory:
            snowflake_sql.execute(cursor, "refresh_stage", stage=stage)
        like = (identifiers.validate_stage_path(prefix) + "/%") if prefix else "%"
        if since is None:
            rows = snowflake_sql.execute(
                cursor, "select_stage_directory", {"prefix": like}, stage=stage
            )
        else:
            rows = snowflake_sql.execute(
                cursor,
                "select_stage_directory_since",
                {"prefix": like, "since": _utc_naive(since)},
                stage=stage,
            )
        return [
            StageFile(path=p, size_bytes=int(s), last_modified=_utc_naive(m), md5=md5)
            for p, s, m, md5 in rows
        ]

    def _from_list(self, cursor, prefix: str) -> list[StageFile]:
        rows = snowflake_sql.execute(cursor, "list_stage", stage=self.stage_fqn)
        want = identifiers.validate_stage_path(prefix) + "/" if prefix else ""
        files = []
        for name, size, md5, modified in rows:
            path = str(name).split("/", 1)[1] if "/" in str(name) else str(name)
            if path.startswith(want):
                files.append(StageFile(path, int(size), _utc_naive(modified), md5 or None))
        return sorted(files, key=lambda f: f.path)

    def _listing(self, prefix: str, since: datetime | None) -> list[StageFile]:
        import snowflake.connector.errors as sf_errors

        with self.connection.connect() as conn:
            cursor = conn.cursor()
            try:
                files = self._from_directory(cursor, prefix, since)
            except sf_errors.ProgrammingError:
                files = self._from_list(cursor, prefix)
                if since is not None:
                    files = [f for f in files if f.last_modified > _utc_naive(since)]
        return [f for f in files if is_audio_path(f.path)]

    def list_files(self, prefix: str = "") -> Iterator[StageFile]:
        yield from self._listing(prefix, None)

    def list_new_files(self, since: datetime | None, prefix: str = "") -> Iterator[StageFile]:
        yield from self._listing(prefix, since)

    def get_command(self, path: str, local_dir: Path) -> str:
        local_uri = Path(local_dir).resolve().as_posix()
        if "'" in local_uri:
            raise ValueError(f"local path {local_uri!r} contains a quote")
        path = identifiers.validate_stage_path(path)
        return f"GET {self._location(path).rstrip('/')} 'file://{local_uri}/'"

    def read_bytes(self, path: str) -> bytes:
        """``GET`` into a temporary folder (not supported by fakesnow; see the tests)."""
        with tempfile.TemporaryDirectory() as tmp, self.connection.connect() as conn:
            conn.cursor().execute(self.get_command(path, Path(tmp)))
            found = list(Path(tmp).rglob(path.rpartition("/")[2]))
            if not found:
                raise FileNotFoundError(f"{path} not found in {self.describe()}")
            return found[0].read_bytes()

    def payload_spec(self) -> dict:
        database, schema, stage = self.stage_fqn
        return {"kind": "snowflake_stage", "database": database, "schema": schema, "stage": stage}

    def describe(self) -> str:
        return "@" + ".".join(self.stage_fqn)
