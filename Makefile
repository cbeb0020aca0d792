# The README's two commands: `make run` (set up, then run the pipeline on config/config.yaml) and
# `make test` (set up, then run the tests). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: run test setup readme clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,cloud]'
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	$(BIN)/python -m pytest

# the README's results tables, from each config's results tree (a config not run yet is skipped)
readme: setup
	$(BIN)/python -m iclbench.readme --if-present
	$(BIN)/python -m iclbench.readme --if-present --config config/long.yaml --layout length

clean:
	rm -rf results logs .snakemake
