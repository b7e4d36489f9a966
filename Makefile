# Two commands: `make run` (server with working defaults) and `make test` (installs what tests need, runs them).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 7880
DATA ?= ./data

.PHONY: run test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,loadtest]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/sfu serve --host $(HOST) --port $(PORT) --data-dir $(DATA) --ice-host $(HOST)

test: $(VENV)/.installed
	bash scripts/test.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
