# Two commands for a new user: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench clean system-packages

# Debian packages that only tests need (see .ci/system-packages): installed when root.
TEST_SYSTEM_PACKAGES := iptables iproute2 chromium
# Test files run in parallel processes (one file per worker at a time: module fixtures such as
# a registry database or a proxy process are shared by the tests of a file).
PYTEST_ARGS ?= -n 4 --dist loadfile

# The native inspection module is compiled at install: a changed C source reinstalls.
$(STAMP): pyproject.toml hatch_build.py proxy/inspect/_native.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sharewall proxy --registry-file examples/registry.yaml --default-purpose service_delivery $(ARGS)

system-packages:
	@bash .ci/system-packages $(TEST_SYSTEM_PACKAGES)

test: $(STAMP) system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
