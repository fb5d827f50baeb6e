# Two entry points: `make run` (the main job on the embedded digits data) and `make test`.
# Both create .venv from the pinned versions in constraints.txt when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/digits-quick.yaml
OUT    ?= runs/digits-quick

.PHONY: run test test-all venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/robustsparse run $(CONFIG) --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "" 

clean:
	rm -rf runs .pytest_cache
