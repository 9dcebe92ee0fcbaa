# brainalign: `make demo` runs the main job on the embedded default; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo demo-long study-demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# DEMO_ARGS: more options, e.g. make demo DEMO_ARGS="--data /scratch/data --max-steps 100"
demo: $(STAMP)
	$(BIN)/brainalign demo $(DEMO_ARGS)

demo-long: $(STAMP)
	$(BIN)/brainalign demo --preset long $(DEMO_ARGS)

# The embedded default study: 2 sizes x 2 image types on the simulated subject, then its report.
study-demo: $(STAMP)
	[ -f data/simulated/truth.json ] || $(BIN)/brainalign simulate --out data/simulated
	$(BIN)/brainalign study run configs/studies/demo.yaml
	$(BIN)/brainalign study report studies/demo --overwrite

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs studies .pytest_cache
