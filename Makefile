# Two commands for a newcomer: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_BIN := .venv-bench/bin

.PHONY: test demo lint lint-deploy venv clean compat bench container-test

RUN_STAMP := $(VENV)/.installed-run

# `make demo` needs only the program itself: no test or lint tools (faster, and works on Python 3.9).
$(RUN_STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $(RUN_STAMP)

# The dev toolchain (pytest 9, mypy 2) needs Python >= 3.10; the runtime on 3.9 is `make compat`.
$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check token_refresh tests benchmarks
	$(BIN)/ruff format --check token_refresh tests benchmarks
	$(BIN)/mypy --strict token_refresh tests

# Static checks of the deployment files (no Docker engine here): every shell script, the Dockerfile.
lint-deploy: $(STAMP)
	$(BIN)/shellcheck $$(grep -rlE --exclude-dir='.venv*' --exclude-dir=.git --exclude='*.py' --exclude='*.md' \
		'^#!(/bin/|/usr/bin/env )(ba)?sh' .)
	$(BIN)/hadolint Dockerfile

# Two workers (pytest-xdist): most of the suite's time is processes starting, not CPU.
test: lint lint-deploy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2

# The package promises Python >= 3.9: run the unit and CLI tests under the oldest Python found.
PY_OLDEST ?= $(firstword $(wildcard /usr/bin/python3.9 /usr/local/bin/python3.9 $(HOME)/.pyenv/versions/3.9*/bin/python3.9))
compat:
	@if [ -z "$(PY_OLDEST)" ]; then echo "compat: no python3.9 on this machine, skipped"; exit 0; fi; \
	test -x .venv39/bin/python || $(PY_OLDEST) -m venv .venv39; \
	.venv39/bin/python -m pip install --quiet -e '.[test]' && \
	PATH="$(CURDIR)/.venv39/bin:$$PATH" .venv39/bin/python -m pytest -q -p no:cacheprovider -n 2 \
		--ignore=tests/e2e tests

# The sidecar for real: podman builds the Dockerfile and runs docker-compose.cron.yml against the
# fake endpoint (tests/container/run.sh). Needs root and apt-get (it installs podman); else skipped.
container-test:
	bash tests/container/run.sh

# A regular install, as in production: the editable install of .venv adds an import hook that loads
# pathlib, re and urllib.parse into every interpreter. Not part of `make test` (slow, needs quiet CPUs).
# The figures go to $(BENCH_OUTPUT), never over benchmarks/results.json (the committed reference):
# copy them there by hand when the README's figures are updated.
BENCH_OUTPUT ?= build/bench-results.json
bench:
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv .venv-bench
	$(BENCH_BIN)/python -m pip uninstall --quiet --yes token-refresh
	$(BENCH_BIN)/python -m pip install --quiet .
	mkdir -p $(dir $(BENCH_OUTPUT))
	$(BENCH_BIN)/python benchmarks/bench.py --output $(BENCH_OUTPUT)

demo: $(RUN_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/demo.py

clean:
	rm -rf $(VENV) .venv-bench .venv39 .venv-container build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
