"""Wheels carry the top-level ``sql/`` as ``audio_pipeline/transcription/sql_files/`` (see
audio_pipeline/transcription/sql.py).

Everything else is in pyproject.toml. Editable installs read ``sql/`` in place.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SQL_SOURCE = Path(__file__).resolve().parent / "sql"


class BuildPyWithSql(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "audio_pipeline" / "transcription" / "sql_files"
            shutil.copytree(SQL_SOURCE, target, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithSql})
