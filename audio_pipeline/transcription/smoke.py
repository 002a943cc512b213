"""The preflight's smoke job (``make snowflake-check``): one node, a few seconds, no Dagster.

Inside the ML Job's container it reads one stage file with the payload's own source (the same
call the transcription job makes), reaches the model and the package index through the job's
external access integration, and reports the image's Python, Ray, torch, transformers, CUDA and
GPU against ``requirements.txt``. The result is one line of the job's log: ``MARK`` + JSON.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path

MARK = "AUDIO_PIPELINE_SMOKE "
SETTINGS_ENV = "AUDIO_PIPELINE_SMOKE_SETTINGS"
DEFAULT_INDEX = "https://pypi.org/simple"
REPORTED = ("ray", "torch", "transformers", "snowflake-ml-python", "dagster-pipes")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:400]


def read_stage_file(spec: dict, file_path: str) -> dict:
    """One file, read exactly as the transcription job reads it."""
    from .sources import open_source

    started = time.monotonic()
    try:
        data = open_source(spec).read_bytes(file_path)
    except Exception as exc:
        return {"ok": False, "file": file_path, "error": _error(exc)}
    return {
        "ok": True,
        "file": file_path,
        "bytes": len(data),
        "seconds": round(time.monotonic() - started, 2),
    }


def reach_model(reference: str, engine: str, home: str) -> dict:
    """A bundled or local model resolves here; a hub model's metadata answers (no weights)."""
    from .models import model_id_for, resolve_model

    bundled = reference.startswith("bundled:") or reference.startswith(("/", ".", "~"))
    try:
        if bundled:
            resolved = resolve_model(reference, engine, home)
            return {"ok": True, "model": reference, "source": "payload", "path": resolved.path}
        repo, _, revision = reference.partition("@")
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo, revision=revision or None, timeout=30)
        return {"ok": True, "model": model_id_for(reference), "source": "hub", "sha": info.sha}
    except Exception as exc:
        return {"ok": False, "model": reference, "error": _error(exc)}


def reach_index(index_url: str | None = None) -> dict:
    """The package index pip would use (``PIP_INDEX_URL``, else PyPI), one small page."""
    base = (index_url or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/")
    url = f"{base}/dagster-pipes/"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
            return {"ok": True, "url": url, "status": response.status}
    except Exception as exc:
        return {"ok": False, "url": url, "error": _error(exc)}


def gpu_info() -> dict:
    """The GPU as the driver (``nvidia-smi``) and torch see it."""
    info: dict = {"name": None, "driver_cuda": None, "torch_cuda": None, "torch_sees_gpu": False}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0 and names:
            info["name"] = names[0]
            info["count"] = len(names)
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        for part in header.stdout.split("CUDA Version:")[1:2]:
            info["driver_cuda"] = part.split()[0]
    except (OSError, subprocess.SubprocessError) as exc:
        info["error"] = _error(exc)
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["torch_sees_gpu"] = True
            info["name"] = info["name"] or torch.cuda.get_device_name(0)
    except Exception as exc:
        info.setdefault("error", _error(exc))
    return info


def versions(requirements: Path) -> dict:
    """What the image has of the reported packages and of each requirement."""
    out: dict = {"python": platform.python_version(), "packages": {}, "requirements": []}
    for name in REPORTED:
        try:
            out["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out["packages"][name] = None
    lines = requirements.read_text().splitlines() if requirements.is_file() else []
    for line in lines:
        spec = line.split("#")[0].strip()
        if not spec:
            continue
        entry: dict = {"requirement": spec}
        try:
            from packaging.requirements import Requirement

            req = Requirement(spec)
            have = metadata.version(req.name)
            entry |= {"installed": have, "satisfied": req.specifier.contains(have, True)}
        except metadata.PackageNotFoundError:
            entry |= {"installed": None, "satisfied": False}
        except Exception as exc:
            entry |= {"installed": None, "satisfied": None, "error": _error(exc)}
        out["requirements"].append(entry)
    return out


def run(settings: dict) -> dict:
    result: dict = {"node": platform.node()}
    result["versions"] = versions(Path(__file__).with_name("requirements.txt"))
    result["gpu"] = gpu_info()
    if settings.get("file"):
        result["read"] = read_stage_file(settings["stage"], settings["file"])
    result["model"] = reach_model(
        settings.get("model", "bundled:tiny.en"),
        settings.get("engine", "transformers"),
        settings.get("home", "/tmp/audio_pipeline"),
    )
    result["index"] = reach_index(settings.get("index_url"))
    return result


def main() -> int:
    settings = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
    print(MARK + json.dumps(run(settings), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
