# The README's two commands: `make demo` and `make test`. Both set themselves up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/crm360: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/crm360

setup: $(BIN)/crm360

demo: setup
	$(BIN)/crm360 demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/crm360 bench

clean:
	rm -rf $(VENV) .crm360 *.egg-info
