"""The audio stage: where audio files land before transcription."""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from ..librispeech import md5_of
from ..transcription.audio import SUPPORTED_EXTENSIONS


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
        are still descended (their own times decide).
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
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                name = entry.name
                if not changed or name.startswith(".tmp-"):
                    continue
                if not name.lower().endswith(SUPPORTED_EXTENSIONS):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if cutoff is not None and st.st_mtime <= cutoff:
                    continue
                yield StageFile(
                    path=Path(entry.path).relative_to(self.root_path).as_posix(),
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
