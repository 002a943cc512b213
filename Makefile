# audio_pipeline — every target sets itself up; `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUBSET ?= sample
PORT ?= 3000
export AUDIO_PIPELINE_HOME ?= $(CURDIR)/.audio_pipeline
export DAGSTER_HOME ?= $(AUDIO_PIPELINE_HOME)/dagster
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: help install demo test test-fast dev stop lint format sample-corpus clean bench-sensor bench \
	bench-profile badcorpus snowflake-setup snowflake-check snowflake-rehearsal

help:
	@echo "make demo     ingest SUBSET (default: sample), transcribe it on a local Ray pool, summarize"
	@echo "make test     run the test suite (includes the end-to-end test on the real tiny.en model)"
	@echo "make dev      Dagster UI on http://127.0.0.1:$(PORT) (PORT=...)"
	@echo "make stop     stop the local Ray head this project started"
	@echo "make lint     ruff"
	@echo "make bench    throughput against faster-whisper and the quickstart's actor, on real speech"
	@echo "make bench-profile  where the time of one transcription job goes"
	@echo "make bench-sensor  the new-file sensor tick by tick on stages of 100,000 and 1,000,000 files,"
	@echo "                   in process and under the daemon"
	@echo "make snowflake-setup  create/update the Snowflake objects (SYSADMIN + ACCOUNTADMIN);"
	@echo "                      SETUP_ARGS='--dry-run' prints the SQL, '--job-role R' grants to R"
	@echo "make snowflake-check  preflight: role, objects, privileges, image, pool, one small job, cost;"
	@echo "                      CHECK_ARGS='--job-role R --hours 10 --no-job'"
	@echo "make snowflake-rehearsal  the whole Snowflake path offline on an emulated account"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first: the CPU wheel on disk. Letting the project pull it would fetch a CUDA build.
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

demo: install
	$(BIN)/python -m audio_pipeline.cli demo --subset $(SUBSET) $(if $(DEBUG),--debug)

# Three workers on 2 cores (TEST_WORKERS=0: one process): much of an end-to-end test is waiting
# (Ray job start, Pipes polls, timeouts), which the others fill. Tests go out one at a time, the
# longest first, and each session Ray cluster is started by one worker only (conftest, affinity.py).
TEST_WORKERS ?= 3
test: install
	$(BIN)/python -m pytest -ra --durations=30 -n $(TEST_WORKERS) audio_pipeline_tests

test-fast: install
	$(BIN)/python -m pytest -ra -m "not slow" audio_pipeline_tests

dev: install
	@mkdir -p $(DAGSTER_HOME)
	@$(BIN)/python -m audio_pipeline.run_health $(DAGSTER_HOME) >/dev/null
	$(BIN)/dagster dev -h 127.0.0.1 -p $(PORT) -w workspace.yaml

stop: install
	$(BIN)/python -m audio_pipeline.cli stop

lint: install
	$(BIN)/ruff check audio_pipeline audio_pipeline_tests tools
	$(BIN)/ruff format --check audio_pipeline audio_pipeline_tests tools

format: install
	$(BIN)/ruff format audio_pipeline audio_pipeline_tests tools
	$(BIN)/ruff check --fix audio_pipeline audio_pipeline_tests tools

bench: install
	$(BIN)/python -m tools.bench.throughput --rounds 3 --out bench/results.json

bench-profile: install
	$(BIN)/python -m tools.bench.profile --out bench/profile.json

badcorpus: install
	$(BIN)/python -m tools.badcorpus

bench-sensor: install
	$(BIN)/python -m tools.bench.sensor --files 100000 --burst 10000
	$(BIN)/python -m tools.bench.sensor --files 1000000 --burst 10000
	$(BIN)/python -m tools.bench.sensor_daemon --files 1000000 --burst 10000

sample-corpus: install
	$(BIN)/python -m tools.sample_corpus

clean: stop
	rm -rf $(AUDIO_PIPELINE_HOME)

snowflake-setup: install
	AUDIO_PIPELINE_PROFILE=snowflake $(BIN)/python -m audio_pipeline.snowflake_setup $(SETUP_ARGS)

snowflake-check: install
	AUDIO_PIPELINE_PROFILE=snowflake $(BIN)/python -m audio_pipeline.snowflake_preflight $(CHECK_ARGS)

snowflake-rehearsal: install
	$(BIN)/python -m tools.rehearsal
