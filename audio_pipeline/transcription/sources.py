"""Where the payload reads audio bytes from: a local stage folder (Snowflake stages: later)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class AudioSource(ABC):
    @abstractmethod
    def read_bytes(self, file_path: str, max_bytes: int | None = None) -> bytes:
        """Read one stage-relative file; raises OSError/ValueError on failure."""


class LocalFolderSource(AudioSource):
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def resolve(self, file_path: str) -> Path:
        path = (self.root / file_path).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{file_path!r} points outside the stage {self.root}")
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
    raise ValueError(f"unknown audio source kind {kind!r}")
