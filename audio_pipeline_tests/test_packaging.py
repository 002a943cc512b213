"""A wheel, not only an editable install: built from a copy of the tree, unpacked, used."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Runs subprocesses: the end-to-end tier.
pytestmark = pytest.mark.slow


def test_wheel_carries_the_sql_and_the_installed_package_finds_it(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("audio_pipeline", "sql"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, src / name)
    # No build isolation: the venv's setuptools, nothing downloaded.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("audio_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sql_files = sorted(p.relative_to(REPO / "sql").as_posix() for p in REPO.glob("sql/*/*.sql"))
    assert len(sql_files) > 30
    assert {f"audio_pipeline/transcription/sql_files/{f}" for f in sql_files} <= names
    assert "audio_pipeline/data/LibriSpeech/sample/1001/128104/1001-128104.trans.txt" in names
    assert not any(n.startswith(("audio_pipeline_tests/", "sql/")) for n in names)

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = """
import sys
from pathlib import Path
import audio_pipeline, audio_pipeline.definitions
from audio_pipeline.transcription.sql import SQL_ROOT, load_sql
from audio_pipeline.resources.warehouse import DuckDBStore
from audio_pipeline.resources.compute import build_payload_dir
site = Path(sys.argv[1])
assert Path(audio_pipeline.__file__).is_relative_to(site), audio_pipeline.__file__
assert SQL_ROOT == site / "audio_pipeline" / "transcription" / "sql_files", SQL_ROOT
assert "MERGE" in load_sql("snowflake", "merge_into_transcripts").upper()
store = DuckDBStore(path=sys.argv[2])
store.ensure_tables()
print(store.batch_report(["none"], "m").files)
bundle = build_payload_dir(Path(sys.argv[3]))
print(len(list(bundle.glob("audio_pipeline/transcription/sql_files/*/*.sql"))))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe, str(site), str(tmp_path / "w.duckdb"), str(tmp_path / "b")],
        cwd=tmp_path,  # not the repository: only the unpacked wheel can be imported
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", str(len(sql_files))]
