# Two entry points: `make run` (the main job on the embedded digits data) and `make test`.
# Both create .venv from the pinned versions in constraints.txt when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/digits-quick.yaml
OUT    ?= runs/digits-quick

.PHONY: run test test-all lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/robustsparse run $(CONFIG) --out $(OUT)

# Style and package boundaries first (ruff; import-linter contracts in pyproject.toml), then the suite.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# One process per core (at most 4: each imports torch), one thread each: tiny models gain nothing
# from threads, and threads of several processes would fight over the cores.
test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --maxprocesses=4

test-all: lint
	$(PY) -m pytest -q -m "" 

clean:
	rm -rf runs .pytest_cache
