"""The job's Python environment against ``requirements.txt``: checked before any work starts.

The SDK's start-up script pip-installs the requirements on every node before the payload runs
(pip leaves a requirement the image already satisfies alone). This check, on the head, says what
the job runs with and fails at once, naming the package, when a requirement is still unmet
(an install that failed or was skipped) instead of failing later in a Ray task.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
# What the job reports besides its requirements: the image's own packages.
IMAGE_PACKAGES = ("ray", "torch", "numpy", "huggingface-hub", "snowflake-ml-python")


def requirements(path: Path = REQUIREMENTS) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet(lines: list[str]) -> list[str]:
    """The requirements the environment does not satisfy, each with what is installed."""
    from packaging.requirements import Requirement

    problems = []
    for line in lines:
        req = Requirement(line)
        version = installed(req.name)
        if version is None or not req.specifier.contains(version, prereleases=True):
            problems.append(f"{line} (installed: {version or 'none'})")
    return problems


def check(path: Path = REQUIREMENTS) -> str:
    """One line naming each requirement's and image package's version; raises when a
    requirement is unmet."""
    lines = requirements(path)
    problems = unmet(lines)
    if problems:
        raise RuntimeError(
            "the job's environment does not meet transcription/requirements.txt: "
            + "; ".join(problems)
            + " (the SDK's pip install on this node failed or was skipped: see the log's start)"
        )
    from packaging.requirements import Requirement

    names = [Requirement(line).name for line in lines] + list(IMAGE_PACKAGES)
    return "environment: " + ", ".join(f"{n} {installed(n) or 'absent'}" for n in names)
