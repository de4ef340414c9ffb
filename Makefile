# Quick start: `make train` and `make test`. Each creates .venv (python3 -m venv + pip) when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Arguments for the main job, e.g. `make train ARGS="trainer.epochs=1"`.
ARGS ?=
# Test processes (pytest-xdist); tests are grouped by file so that a file's fixtures are made once.
TEST_WORKERS ?= 2

.PHONY: install train test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# CIFAR-10 in 10 minutes: cifar10_fast on a CUDA GPU, else the CPU recipe sized to the machine
# (experiment=cifar10 picks; docs/benchmarks.md). Data sets are read from $$IMGCLS_DATA (else ./data).
train: $(STAMP)
	$(BIN)/imgcls train experiment=cifar10 $(ARGS)

# The linter first (rules in pyproject.toml), then the suite. pytest exit code 5 ("no tests
# collected") counts as a failure: a suite that runs nothing is broken.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache
