# mesh: `make demo` runs a small local mesh; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONTRIB := $(wildcard contrib/*/pyproject.toml)
# Four workers: most tests wait on real node processes, so they overlap well on 2 cores.
PYTEST_ARGS ?= -m "not slow" -n 4 --dist loadfile

.PHONY: demo test test-all install clean

$(STAMP): pyproject.toml $(CONTRIB)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@for d in $(dir $(CONTRIB)); do echo "installing $$d"; $(BIN)/pip install --quiet -e $$d || exit 1; done
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS) tests $(wildcard contrib/*/tests)

test-all: $(STAMP)
	$(BIN)/pytest -q -m "" tests $(wildcard contrib/*/tests)

clean:
	rm -rf $(VENV) build *.egg-info
