# Two commands on a fresh machine (see README):  make run  |  make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= all
# Setup is re-done only when the lock file or pyproject.toml change (stamp on their hash).
LOCK_HASH := $(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(LOCK_HASH)

.PHONY: setup run test report lint format bench lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch==2.13.0 is in the same install as diffusers/transformers/accelerate (CPU wheel)
	$(PY) -m pip install --disable-pip-version-check -q --no-compile -r requirements.lock
	@# byte-compile on every core (pip does it on one: 73 s of the 126 s install on 2 cores,
	@# 46 s here); like pip, skip files that are not for this Python (a py3.12-only torch test)
	@$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

run: setup  ## set up, then run the default workflow (offline, CPU)
	$(SNAKEMAKE) --cores $(CORES)

test: setup  ## set up, then run the whole test suite (lint, unit, end-to-end, SLURM, browser)
	$(PY) -m pytest

report: setup  ## Snakemake HTML report of the last run
	$(SNAKEMAKE) --report results/report.zip

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/snakefmt --check Snakefile rules && $(SNAKEMAKE) --lint

format: setup
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix . && $(VENV)/bin/snakefmt Snakefile rules

bench: setup
	$(PY) bench/bench_sampler.py && $(PY) bench/bench_training.py && $(PY) bench/bench_if.py
	$(PY) bench/bench_noop.py
	@# the SLURM part needs root (a local cluster); without it only the dry-run submission counts
	if [ "$$(id -u)" = 0 ]; then $(PY) bench/bench_slurm.py; else $(PY) bench/bench_slurm.py --planned-only; fi

lock:  ## re-resolve requirements.in into requirements.lock
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install -q -r requirements.in
	.lockenv/bin/pip freeze | sed 's/^torch==\(.*\)+cpu/torch==\1/' > requirements.lock && rm -rf .lockenv

clean:
	rm -rf results logs benchmarks .snakemake
