"""Where the payload reads audio bytes from: a local stage folder or a Snowflake stage."""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
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
        options = {k: spec[k] for k in SnowflakeStageSource.OPTIONS if spec.get(k) is not None}
        return SnowflakeStageSource(spec["database"], spec["schema"], spec["stage"], **options)
    raise ValueError(f"unknown audio source kind {kind!r}")


class StageUnreachableError(RuntimeError):
    """The stage cannot be read at all: the job stops with this diagnosis instead of writing an
    error row for every file."""


class StageReadError(OSError):
    """One file could not be read, every attempt on a new connection failing."""


# The connector's "the file does not exist" (GET found nothing under the path).
_GET_NOTHING = 253006


class SnowflakeStageSource(AudioSource):
    """Files of a Snowflake stage, downloaded with the connector's ``GET`` into a temporary
    directory (per call, or per block of reads inside :meth:`block`), read and deleted there.

    ``GET`` runs on a connection of this process's own (the container's credentials,
    :mod:`.snowflake_auth`) and needs no external access integration. A file that is not on the
    stage is a ``FileNotFoundError``: one error row. Any other failure is the transport's
    (endpoint, login, storage): retried ``attempts`` times, each on a new connection whose login
    reads the token file again; ``max_consecutive_failures`` files in a row failing so in one
    process raise :class:`StageUnreachableError`, which ends the job with a diagnosis.
    """

    OPTIONS = ("attempts", "max_consecutive_failures", "network_timeout_s", "backoff_s")

    def __init__(
        self,
        database: str,
        schema: str,
        stage: str,
        *,
        attempts: int = 3,
        max_consecutive_failures: int = 3,
        network_timeout_s: float = 60.0,
        backoff_s: float = 2.0,
    ):
        from . import identifiers

        self.database = identifiers.validate(database, "database name")
        self.schema = identifiers.validate(schema, "schema name")
        self.stage = identifiers.validate(stage, "stage name")
        self.location = "@" + identifiers.qualified(self.database, self.schema, self.stage)
        self.attempts = max(1, int(attempts))
        self.max_consecutive_failures = max(1, int(max_consecutive_failures))
        self.network_timeout_s = float(network_timeout_s)
        self.backoff_s = float(backoff_s)
        self._dir: Path | None = None

    @contextmanager
    def block(self) -> Iterator[None]:
        with tempfile.TemporaryDirectory(prefix="stage-block-") as tmp:
            self._dir = Path(tmp)
            try:
                yield
            finally:
                self._dir = None

    def read_bytes(self, file_path: str, max_bytes: int | None = None) -> bytes:
        from . import identifiers

        path = identifiers.validate_stage_path(file_path)
        if self._dir is None:
            with self.block():
                return self.read_bytes(path, max_bytes)
        errors: list[str] = []
        # after a file failed so, one attempt each until one succeeds: a broken transport
        # ends the job within max_consecutive_failures reads, not after every file's retries
        tries = 1 if _health.failing(self.location) else self.attempts
        for attempt in range(tries):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            target = self._dir / str(attempt)
            try:
                local = self._get(path, target)
            except FileNotFoundError:
                _health.succeeded(self.location)  # the stage answered
                raise
            except Exception as exc:  # the transport's: a new connection for the next attempt
                _connections.drop(self.database, self.schema)
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            _health.succeeded(self.location)
            try:
                size = local.stat().st_size
                if max_bytes is not None and size > max_bytes:
                    raise ValueError(
                        f"{file_path}: {size} bytes exceeds the {max_bytes}-byte limit"
                    )
                return local.read_bytes()
            finally:
                local.unlink(missing_ok=True)
        failures = _health.failed(self.location)
        if failures >= self.max_consecutive_failures:
            raise StageUnreachableError(self.diagnosis(failures, errors[-1]))
        raise StageReadError(
            f"{file_path}: stage read failed {tries} time(s), each on a new connection "
            f"(last: {errors[-1]})"
        )

    def _get(self, path: str, into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        conn = _connections.get(self.database, self.schema, self.network_timeout_s)
        try:
            conn.cursor().execute(f"GET '{self.location}/{path}' 'file://{into.as_posix()}/'")
        except Exception as exc:
            if getattr(exc, "errno", None) == _GET_NOTHING:
                raise FileNotFoundError(
                    f"{path}: not on the stage {self.location} (removed since it was listed?)"
                ) from None
            raise
        local = into / path.rsplit("/", 1)[-1]
        if not local.is_file():
            raise FileNotFoundError(f"{path}: GET from {self.location} wrote no file")
        return local

    def diagnosis(self, failures: int, last: str) -> str:
        host = os.environ.get("SNOWFLAKE_HOST", "(SNOWFLAKE_HOST unset)")
        return (
            f"the stage {self.location} cannot be read: {failures} file(s) in a row failed, each "
            f"after up to {self.attempts} GET attempt(s) on a new connection (last error: "
            f"{last}). The job stops here instead of writing an error row per file; files not "
            "read yet stay pending for the next run. Check that the Snowflake endpoint "
            f"{host} answers from the container (connector network_timeout "
            f"{self.network_timeout_s:.0f} s), that the job's role has READ on the stage, and "
            "that the stage's storage is reachable (GET downloads from it)."
        )


class _Connections:
    """One connection per process and schema, shared by the decode tasks the process runs;
    dropped after a failure so that the next login reads the token file again."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conns: dict[tuple[str, str], object] = {}

    def get(self, database: str, schema: str, network_timeout_s: float):
        from . import snowflake_auth

        with self._lock:
            conn = self._conns.get((database, schema))
            if conn is None:
                conn = snowflake_auth.connect(database, schema, network_timeout_s=network_timeout_s)
                self._conns[(database, schema)] = conn
            return conn

    def drop(self, database: str, schema: str) -> None:
        with self._lock:
            conn = self._conns.pop((database, schema), None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection: nothing to close cleanly
                pass


class _Health:
    """Files in a row whose read failed on the transport, per stage, in this process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}

    def succeeded(self, location: str) -> None:
        with self._lock:
            self._failures[location] = 0

    def failing(self, location: str) -> bool:
        with self._lock:
            return self._failures.get(location, 0) > 0

    def failed(self, location: str) -> int:
        with self._lock:
            self._failures[location] = self._failures.get(location, 0) + 1
            return self._failures[location]


_connections = _Connections()
_health = _Health()
