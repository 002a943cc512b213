"""Hub models fetched once: copied into a models stage, loaded by every node from there.

A Hugging Face model is named with a pinned revision (``openai/whisper-large-v3@<commit>``). The
first job that needs it downloads it from the Hub once, on its head node, and PUTs its files
under ``<stage>/<org>/<name>/<revision>/``, ``COMPLETE.json`` (the file list) last. Every node
then GETs those files into its local directory (``<home>/models/staged/...``) once; later jobs
and actors on that node load them from disk. The Hub is never asked again for that revision, by
any node of any job. The model's ``model_path`` travels to the actors as ``staged:<location>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .models import ModelError

SCHEME = "staged:"
COMPLETE = "COMPLETE.json"
# A transformers Whisper checkpoint: config, tokenizer and processor files, safetensors weights
# (not the repository's duplicate PyTorch, Flax or ONNX weights).
ALLOW_PATTERNS = ("*.json", "*.txt", "*.safetensors")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_LOCATION = re.compile(r'@[A-Za-z0-9_.$"]+(/[A-Za-z0-9_.-]+)*')


@dataclass(frozen=True)
class StagedModel:
    repo_id: str
    revision: str
    location: str  # the models stage, e.g. @"DB"."SCH"."JOB_STAGE"/models

    @property
    def prefix(self) -> str:
        return f"{self.location.rstrip('/')}/{self.repo_id}/{self.revision}"

    @property
    def model_path(self) -> str:
        """What the actors get as their ``model_path``."""
        return SCHEME + self.prefix

    def local_dir(self, home: str | Path) -> Path:
        return (
            Path(home) / "models" / "staged" / f"{self.repo_id.replace('/', '--')}@{self.revision}"
        )


def staged_model(reference: str, location: str) -> StagedModel:
    """``org/name@revision`` in the models stage ``location``; a revision is required."""
    repo_id, _, revision = reference.partition("@")
    if not _REPO.fullmatch(repo_id):
        raise ModelError(f"{reference!r} is not a Hugging Face model id (org/name@revision)")
    if not revision:
        raise ModelError(
            f"{repo_id}: pin a revision (a commit of the model's repository), e.g. "
            f"{repo_id}@<commit>: a job's model is copied once into the models stage and "
            "reused, so it must not change under the same name"
        )
    if not _REVISION.fullmatch(revision):
        raise ModelError(f"invalid revision {revision!r} for {repo_id}")
    if not _LOCATION.fullmatch(location):
        raise ModelError(f"invalid models stage location {location!r}")
    return StagedModel(repo_id, revision, location)


def parse_model_path(model_path: str) -> StagedModel:
    """The :class:`StagedModel` of a ``staged:`` model path."""
    prefix = model_path.removeprefix(SCHEME)
    location, org, name, revision = prefix.rsplit("/", 3)
    return staged_model(f"{org}/{name}@{revision}", location)


def is_staged(model_path: str | None) -> bool:
    return bool(model_path) and model_path.startswith(SCHEME)


def read_manifest(conn, model: StagedModel) -> dict | None:
    """``COMPLETE.json`` of the staged copy, or None when the copy is missing or incomplete."""
    with tempfile.TemporaryDirectory(prefix="model-manifest-") as tmp:
        try:
            _get(conn, f"{model.prefix}/{COMPLETE}", Path(tmp))
        except FileNotFoundError:
            return None
        return json.loads((Path(tmp) / COMPLETE).read_text())


def publish(
    conn, model: StagedModel, home: str | Path | None = None, log: Callable[[str], None] = print
) -> str:
    """Make sure ``model`` is in the models stage: ``"stage"`` when it already was, ``"hub"``
    when it was downloaded from the Hub (``HF_ENDPOINT``) and copied there now (and kept as
    this node's local copy under ``home``)."""
    if read_manifest(conn, model) is not None:
        log(f"model {model.repo_id}@{model.revision}: in the models stage ({model.prefix})")
        return "stage"
    from huggingface_hub import snapshot_download

    log(
        f"model {model.repo_id}@{model.revision}: not in the models stage; downloading it "
        "from the Hub once"
    )
    with tempfile.TemporaryDirectory(prefix="hub-model-") as tmp:
        root = Path(
            snapshot_download(
                model.repo_id,
                revision=model.revision,
                local_dir=Path(tmp) / "model",
                allow_patterns=list(ALLOW_PATTERNS),
                # read now, not when huggingface_hub was imported (HF_ENDPOINT: a mirror)
                endpoint=os.environ.get("HF_ENDPOINT") or None,
            )
        )
        shutil.rmtree(root / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
        files = {
            p.relative_to(root).as_posix(): p.stat().st_size
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }
        if "config.json" not in files or not any(f.endswith(".safetensors") for f in files):
            raise ModelError(
                f"{model.repo_id}@{model.revision} has no config.json and safetensors weights"
            )
        cur = conn.cursor()
        for rel in files:
            folder = f"{model.prefix}/{rel}".rsplit("/", 1)[0]
            cur.execute(  # quoted: a path's "--" would start a comment
                f"PUT 'file://{(root / rel).as_posix()}' '{folder}/' "
                "AUTO_COMPRESS=FALSE OVERWRITE=TRUE"
            )
        manifest = root / COMPLETE
        manifest.write_text(
            json.dumps({"repo_id": model.repo_id, "revision": model.revision, "files": files})
        )
        cur.execute(  # last: a copy without its manifest is incomplete
            f"PUT 'file://{manifest.as_posix()}' '{model.prefix}/' "
            "AUTO_COMPRESS=FALSE OVERWRITE=TRUE"
        )
        if home is not None:
            _install(root, model.local_dir(home))
    total = sum(files.values()) / 1e6
    log(
        f"model {model.repo_id}@{model.revision}: {len(files)} files ({total:.1f} MB) copied "
        f"to {model.prefix}"
    )
    return "hub"


def ensure_local(model_path: str, home: str | Path, connect: Callable) -> Path:
    """The node-local directory of a ``staged:`` model, GET from the stage the first time (one
    process per node does it; the others wait on a file lock and reuse it)."""
    model = parse_model_path(model_path)
    target = model.local_dir(home)
    if (target / COMPLETE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if (target / COMPLETE).is_file():
            return target
        conn = connect()
        try:
            manifest = read_manifest(conn, model)
            if manifest is None:
                raise ModelError(f"{model.prefix}: the model is not in the models stage")
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
                staging = Path(tmp) / "model"
                for rel, size in manifest["files"].items():
                    into = (staging / rel).parent
                    local = _get(conn, f"{model.prefix}/{rel}", into)
                    if local.stat().st_size != size:
                        raise ModelError(
                            f"{model.prefix}/{rel}: {local.stat().st_size} bytes, expected {size}"
                        )
                (staging / COMPLETE).write_text(json.dumps(manifest))
                _install(staging, target, locked=True)
        finally:
            conn.close()
    return target


def _install(source: Path, target: Path, locked: bool = False) -> None:
    """Move a complete copy (``COMPLETE.json`` inside) to ``target``, replacing a partial one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if locked else _locked(target.parent / f".{target.name}.lock"):
        if (target / COMPLETE).is_file():
            return
        if target.exists():  # an incomplete earlier copy
            shutil.rmtree(target)
        shutil.move(str(source), str(target))


def _get(conn, stage_file: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    try:
        conn.cursor().execute(f"GET '{stage_file}' 'file://{into.as_posix()}/'")
    except Exception as exc:
        if getattr(exc, "errno", None) == 253006:  # the connector's "the file does not exist"
            raise FileNotFoundError(stage_file) from None
        raise
    local = into / stage_file.rsplit("/", 1)[-1]
    if not local.is_file():
        raise FileNotFoundError(stage_file)
    return local


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
