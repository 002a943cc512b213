"""The payload's requirements cannot break the runtime image: bounded at the tested releases,
constraints for what an install pulls along, and a check of the job's environment first."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement

from audio_pipeline.resources.compute import build_payload_dir
from audio_pipeline.resources.compute.snowflake_ml import PAYLOAD_CONSTRAINTS, payload_requirements
from audio_pipeline.transcription import environment


def test_every_requirement_is_bounded_and_met_by_the_tested_versions():
    for line in environment.requirements():
        req = Requirement(line)
        bounds = {spec.operator for spec in req.specifier}
        assert bounds & {"<", "<=", "=="}, f"{line}: no upper bound"
        assert req.specifier.contains(environment.installed(req.name)), line
    assert environment.unmet(environment.requirements()) == []


def test_the_check_names_versions_and_fails_on_an_unmet_requirement(tmp_path):
    line = environment.check()
    assert line.startswith("environment: dagster-pipes 1.13.27") and "transformers 5." in line
    bad = tmp_path / "requirements.txt"
    bad.write_text("librosa>=99  # a release that does not exist\nsoundfile>=0.12\n")
    with pytest.raises(RuntimeError, match=r"librosa>=99 \(installed: 0\.11\.0\)"):
        environment.check(bad)


def test_the_job_gets_the_constraints_file_it_ships(tmp_path):
    reqs = payload_requirements()
    assert reqs[:-1] == environment.requirements()
    assert reqs[-1] == f"-c {PAYLOAD_CONSTRAINTS}"
    bundle = build_payload_dir(tmp_path / "bundle")
    constraints = (bundle / PAYLOAD_CONSTRAINTS).read_text()
    assert "huggingface-hub<" in constraints and "tokenizers<" in constraints
