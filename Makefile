# The README's two commands: `make demo` and `make test`. Both set themselves up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The dashboard tests drive Debian's Chromium (root installs it directly, others through sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo lint test test-fast bench clean

$(BIN)/crm360: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/crm360

/usr/bin/chromedriver:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

setup: $(BIN)/crm360

demo: setup
	$(BIN)/crm360 demo

# Lint, format and types: ruff and mypy, as pinned and set up in pyproject.toml. CI runs them before the tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup /usr/bin/chromedriver
	$(BIN)/python -m pytest

# The unit tier: doctests and tests that need neither the broker nor embedded ClickHouse.
test-fast: setup
	$(BIN)/python -m pytest -m "not integration"

bench: setup
	$(BIN)/crm360 bench

clean:
	rm -rf $(VENV) .crm360 *.egg-info
