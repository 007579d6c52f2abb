# Two commands for a newcomer: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_BIN := .venv-bench/bin

.PHONY: test demo lint venv clean bench

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check token_refresh tests benchmarks
	$(BIN)/ruff format --check token_refresh tests benchmarks
	$(BIN)/mypy --strict token_refresh

test: lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# A regular install, as in production: the editable install of .venv adds an import hook that loads
# pathlib, re and urllib.parse into every interpreter. Not part of `make test` (slow, needs quiet CPUs).
bench:
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv .venv-bench
	$(BENCH_BIN)/python -m pip uninstall --quiet --yes token-refresh
	$(BENCH_BIN)/python -m pip install --quiet .
	$(BENCH_BIN)/python benchmarks/bench.py

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/demo.py

clean:
	rm -rf $(VENV) .venv-bench build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
