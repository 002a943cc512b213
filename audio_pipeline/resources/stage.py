"""The audio stage: where audio files land before transcription."""

from __future__ import annotations

import os
import shutil
import stat as statmod
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


@dataclass(frozen=True, slots=True)
class StageFile:
    path: str  # stage-relative, "/"-separated
    size_bytes: int
    last_modified: datetime
    md5: str | None = None


EPOCH = datetime(1970, 1, 1)
# Sorts after every name in a folder and before its subfolders: "folder done" as a position.
FOLDER_END = "\U0010ffff"


def naive_utc_of_ns(ns: int) -> datetime:
    """A file time in nanoseconds as naive UTC, to the microsecond (what the manifest keeps)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def ns_of(value: datetime) -> int:
    return (value.replace(tzinfo=None) - EPOCH) // timedelta(microseconds=1) * 1000


@dataclass(frozen=True)
class Mark:
    """A position in a pass: every file up to ``path`` (in the pass's order) was yielded.
    ``matched``: a folder skipped because its digest equals the manifest's."""

    path: str
    matched: str | None = None


@dataclass
class ScanPass:
    """One pass over the stage, resumable from ``after`` (the last position handled).

    ``full``: every file (else only what changed since ``since``); files modified after
    ``horizon`` wait for the next pass (they may still be being written); ``state``: the
    backend's own notes (JSON).
    """

    full: bool
    horizon: datetime
    since: datetime | None = None
    after: str = ""
    state: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "full": self.full,
            "horizon": self.horizon.isoformat(),
            "since": self.since.isoformat() if self.since else None,
            "after": self.after,
            "state": self.state,
        }

    @classmethod
    def from_json(cls, data: dict) -> ScanPass:
        since = data.get("since")
        return cls(
            full=bool(data["full"]),
            horizon=datetime.fromisoformat(data["horizon"]),
            since=datetime.fromisoformat(since) if since else None,
            after=str(data.get("after") or ""),
            state=dict(data.get("state") or {}),
        )


class AudioStage(dg.ConfigurableResource, ABC):
    """A place holding audio files, addressed by stage-relative paths.

    The new-file sensor walks it in passes (``scan``), a bounded piece per tick; each backend
    makes a pass cost what changed, not what is there.
    """

    @abstractmethod
    def list_files(self, prefix: str = "") -> Iterator[StageFile]:
        """Audio files under ``prefix`` (supported extensions only)."""

    def list_new_files(self, since: datetime | None, prefix: str = "") -> Iterator[StageFile]:
        """Files modified after ``since`` (all when None)."""
        for f in self.list_files(prefix):
            if since is None or f.last_modified > since:
                yield f

    def prepare_tick(self, memory: dict, idle_check: bool) -> bool | None:
        """First thing of every tick: make the listing current. With ``idle_check``, say whether
        anything may have changed since the last pass (None: only a scan can tell)."""
        return None

    @abstractmethod
    def scan(
        self,
        scan: ScanPass,
        memory: dict,
        prefix: str = "",
        digests: Callable[[], dict] | None = None,
    ) -> Iterator[StageFile | Mark]:
        """The pass's candidate files after ``scan.after``, in the pass's fixed order, and a
        ``Mark`` at each point up to which everything was yielded. ``memory`` is the backend's
        own state between ticks (kept in the sensor's cursor); ``digests`` gives the manifest's
        ``{folder: (files, bytes, sum of modification times in µs)}``."""

    def finish_pass(self, scan: ScanPass, memory: dict) -> None:
        """Called once a pass has handled all its files."""

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


def _file_stat(entry: os.DirEntry) -> os.stat_result | None:
    """A regular file's stat (a link: its target's; a dangling link: its own); else None."""
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    if statmod.S_ISLNK(st.st_mode):
        try:
            return entry.stat(follow_symlinks=True)
        except OSError:
            return st
    return st if statmod.S_ISREG(st.st_mode) else None


def _position(path: str) -> tuple[tuple[str, ...], str] | None:
    if not path:
        return None
    *folder, name = path.split("/")
    return tuple(folder), name


def digest_of(files) -> tuple[int, int, int]:
    """(files, bytes, sum of modification times in µs) of ``(name, size, mtime_ns)`` items."""
    return (len(files), sum(f[1] for f in files), sum(f[2] // 1000 for f in files))


MAX_REMEMBERED_FOLDERS = 5000


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
        whole = ScanPass(full=True, horizon=datetime(9999, 1, 1))
        for item in self.scan(whole, {}, prefix):
            if isinstance(item, StageFile):
                yield item

    def scan(self, scan, memory, prefix="", digests=None):
        """Walk the folder depth-first in name order (a folder's files, then its subfolders), so
        that a position is one path; the walk is streamed, one folder in memory at a time.

        A new-file pass lists only folders changed since ``since`` (adding, removing or renaming
        a file changes its folder's time) and not as they were when last listed (``memory``
        keeps the time and newest file time of recently listed folders); a folder with no
        subfolders (``st_nlink`` 2) that has not changed is not even opened. A file overwritten
        in place leaves its folder's time alone: the full pass finds it. A full pass opens
        every folder, and skips those whose digest equals the manifest's.

        Hidden files and folders are skipped; so are FIFOs, sockets and devices. A name that is
        not valid UTF-8 is listed escaped (``transcription.sources.stage_path_of``). A folder
        that cannot be read is skipped, never an error: one odd entry never stops a listing.
        """
        base = self._resolve(prefix) if prefix else self.root_path
        if not base.is_dir():
            return
        base_parts = tuple(stage_path_of(p) for p in base.relative_to(self.root_path).parts)
        horizon_ns = ns_of(scan.horizon)
        cutoff_ns = None if scan.full or scan.since is None else ns_of(scan.since)
        settled_ns = horizon_ns - 1_000_000_000  # folder times are coarse: trust them a second on
        folders = memory.setdefault("folders", {})
        stale = [k for k, v in folders.items() if cutoff_ns is not None and v[0] <= cutoff_ns]
        for key in stale:  # older than the cutoff: the time rule covers them
            del folders[key]
        if len(folders) > MAX_REMEMBERED_FOLDERS:
            keep = sorted(folders.items(), key=lambda kv: kv[1][0])[-MAX_REMEMBERED_FOLDERS:]
            memory["folders"] = folders = dict(keep)
        resume = _position(scan.after)
        manifest = None
        stack = [(base, base_parts)]
        while stack:
            folder, parts = stack.pop()
            from_name = None
            if resume is not None and parts <= resume[0]:
                if parts == resume[0]:
                    from_name = resume[1]
                elif resume[0][: len(parts)] == parts:
                    from_name = FOLDER_END  # above the resume point: its own files are done
                else:
                    continue  # wholly before the resume point
            rel = "/".join(parts)
            try:
                st = os.stat(folder)
            except OSError:  # gone, or not readable
                continue
            known = folders.get(rel)
            unchanged = not scan.full and (
                (cutoff_ns is not None and st.st_mtime_ns <= cutoff_ns)
                or (known is not None and known[0] == st.st_mtime_ns)
            )
            if unchanged and st.st_nlink == 2:  # and no subfolders: nothing to open
                continue
            skip_files = unchanged or from_name == FOLDER_END
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            subdirs, files = [], []
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append((stage_path_of(name), entry.path))
                        continue
                except OSError:
                    continue
                if skip_files or not name.lower().endswith(SUPPORTED_EXTENSIONS):
                    continue
                fst = _file_stat(entry)
                if fst is not None:
                    files.append((stage_path_of(name), fst.st_size, fst.st_mtime_ns))
            del entries
            for name, path in sorted(subdirs, reverse=True):
                stack.append((Path(path), (*parts, name)))
            if skip_files:
                continue
            eligible = [f for f in files if f[2] <= horizon_ns]
            deferred = len(files) - len(eligible)
            matched = None
            if scan.full:
                if from_name is None and digests is not None:
                    if manifest is None:
                        manifest = digests()
                    if eligible and manifest.get(rel) == digest_of(eligible):
                        eligible, matched = [], rel
            else:
                floor = -1 if cutoff_ns is None else cutoff_ns
                seen = -1 if known is None else known[1]
                eligible = [f for f in eligible if f[2] > floor and f[2] >= seen]
            head = f"{rel}/" if rel else ""
            for name, size, mtime_ns in sorted(eligible):
                if from_name is None or name > from_name:
                    yield StageFile(head + name, size, naive_utc_of_ns(mtime_ns))
            # A folder unchanged since before the pass began is done, even one resumed midway
            # (its first files were handled by the tick before).
            if deferred == 0 and st.st_mtime_ns <= settled_ns:
                folders[rel] = [st.st_mtime_ns, max((f[2] for f in files), default=0)]
            else:
                folders.pop(rel, None)
            yield Mark(head + FOLDER_END, matched)

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
    refresh_directory: bool = Field(
        default=True,
        description="ALTER STAGE ... REFRESH in every sensor tick; turn off for a stage created "
        "with DIRECTORY = (ENABLE = TRUE AUTO_REFRESH = TRUE)",
    )
    use_stream: bool = Field(
        default=True, description="idle ticks ask the stage's stream (no warehouse)"
    )
    stream_name: str = "AUDIO_FILES_STAGE_STREAM"
    pending_table: str = "STAGE_PENDING_FILES"
    page_size: int = Field(default=10_000, ge=1, description="directory rows per query")
    _put_stack: ExitStack | None = PrivateAttr(default=None)
    _put_cursor: object = PrivateAttr(default=None)

    @property
    def stage_fqn(self) -> tuple[str, str, str]:
        return self.connection.object_name(self.stage_name)

    def _location(self, path: str, folder: bool = True) -> str:
        """A stage location in single quotes, so that no file path is ever read as SQL (a
        ``--`` in a name would otherwise start a comment)."""
        location = "@" + identifiers.qualified(*self.stage_fqn)
        if path:
            location += "/" + identifiers.validate_stage_path(path) + ("/" if folder else "")
        return f"'{location}'"

    def put_command(self, local: Path, path: str) -> str:
        """``PUT 'file://...' '@stage/<dir>/' AUTO_COMPRESS=FALSE OVERWRITE=FALSE PARALLEL=n``."""
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

    # ---------------------------------------------------------------- the new-file sensor
    @property
    def stream_fqn(self) -> tuple[str, str, str]:
        return self.connection.object_name(self.stream_name)

    @property
    def pending_fqn(self) -> tuple[str, str, str]:
        return self.connection.object_name(self.pending_table)

    def prepare_tick(self, memory: dict, idle_check: bool) -> bool | None:
        """``ALTER STAGE ... REFRESH``; then, to tell whether anything changed since the last
        pass, ``SYSTEM$STREAM_HAS_DATA`` on the stage's stream and the pending table's row
        count from ``SHOW TABLES``: cloud-services statements only, so an idle tick resumes no
        warehouse."""
        import snowflake.connector.errors as sf_errors

        with self.connection.connect() as conn:
            cur = conn.cursor()
            if self.refresh_directory:
                snowflake_sql.execute(cur, "refresh_stage", stage=self.stage_fqn)
            if not idle_check or not self.use_stream:
                return None
            try:
                rows = snowflake_sql.execute(
                    cur,
                    "select_stream_has_data",
                    {"stream": identifiers.qualified(*self.stream_fqn)},
                )
                pending = self._pending_rows(cur)
            except sf_errors.ProgrammingError:
                return None  # no stream (make snowflake-setup creates it): only a scan can tell
        has_data = str(rows[0][0]).lower() in ("true", "1")
        return has_data or bool(memory.get("young")) or pending != memory.get("pending_rows", 0)

    def _pending_rows(self, cur) -> int:
        tables = snowflake_sql.execute(
            cur,
            "show_pending_table",
            {"name": self.pending_table},
            schema=self.connection.schema_fqn,
        )
        column = [str(d[0]).lower() for d in cur.description].index("rows")
        return sum(int(r[column] or 0) for r in tables)

    def scan(self, scan, memory, prefix="", digests=None):
        """Pages of ``page_size`` files ordered by path, each after the last one seen
        (``RELATIVE_PATH > %(after)s ... LIMIT``), never the whole listing at once.

        A new-file pass first deletes the pending rows the last pass handled, then moves the
        stream's changes into the pending table (reading a stream in DML consumes it, in one
        transaction: nothing is lost between the two) and pages through that; a full pass, or
        a stage without the stream, pages through the directory table."""
        import snowflake.connector.errors as sf_errors

        like = (identifiers.validate_stage_path(prefix) + "/%") if prefix else "%"
        names = {"stage": self.stage_fqn, "pending": self.pending_fqn}
        with self.connection.connect() as conn:
            cur = conn.cursor()
            queued = not scan.full and self.use_stream and not scan.state.get("no_stream")
            if queued and not scan.state.get("queued"):
                try:
                    if memory.get("cleanup"):
                        horizon = datetime.fromisoformat(memory["cleanup"])
                        snowflake_sql.execute(
                            cur, "delete_stage_pending", {"horizon": horizon}, **names
                        )
                    snowflake_sql.execute(
                        cur, "merge_stage_stream_into_pending", stream=self.stream_fqn, **names
                    )
                    memory.pop("cleanup", None)
                    scan.state["queued"] = True
                except sf_errors.ProgrammingError:
                    queued = False
                    scan.state["no_stream"] = True
            after = scan.after
            while True:
                params = {"prefix": like, "after": after, "limit": self.page_size}
                if queued:
                    template = "select_stage_pending_page"
                elif scan.since is None:
                    template = "select_stage_directory_page"
                else:
                    template = "select_stage_directory_page_since"
                    params["since"] = _utc_naive(scan.since)
                rows = snowflake_sql.execute(cur, template, params, **names)
                for path, size, modified, md5 in rows:
                    modified = _utc_naive(modified)
                    if modified > scan.horizon:
                        scan.state["young"] = True
                    if is_audio_path(str(path)):
                        yield StageFile(str(path), int(size), modified, md5 or None)
                if len(rows) < self.page_size:
                    return
                after = str(rows[-1][0])
                yield Mark(after)

    def finish_pass(self, scan: ScanPass, memory: dict) -> None:
        """After a pass over the pending table: its rows up to the pass's horizon are deleted
        when the next pass starts (once this tick's runs are recorded); until then the row
        count is what an idle tick expects to see."""
        if not scan.state.get("queued"):
            return
        memory["cleanup"] = scan.horizon.isoformat()
        memory["young"] = bool(scan.state.get("young"))
        with self.connection.connect() as conn:
            memory["pending_rows"] = self._pending_rows(conn.cursor())

    def get_command(self, path: str, local_dir: Path) -> str:
        local_uri = Path(local_dir).resolve().as_posix()
        if "'" in local_uri:
            raise ValueError(f"local path {local_uri!r} contains a quote")
        path = identifiers.validate_stage_path(path)
        return f"GET {self._location(path, folder=False)} 'file://{local_uri}/'"

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
