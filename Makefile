# mesh: `make demo` runs a small local mesh; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONTRIB := $(wildcard contrib/*/pyproject.toml)
# Four workers: most tests wait on real node processes, so they overlap well on 2 cores.
PYTEST_ARGS ?= -m "not slow" -n 4 --dist loadfile
# Editable installs in strict mode: each source file is linked into build/ and a plain path
# entry finds them, so no import hook runs at every start (it cost each process ~25 ms).
# A new module is linked only by a reinstall, so the list of modules is a prerequisite.
EDITABLE := --config-settings editable_mode=strict
MODULES := $(sort $(shell find core plugins_builtin $(dir $(CONTRIB)) -name '*.py' \
                      -not -path '*/build/*' -not -path '*/tests/*' 2>/dev/null))
MODULE_LIST := $(VENV)/.modules

.PHONY: demo test test-all install clean bytecode FORCE

$(MODULE_LIST): FORCE
	@mkdir -p $(VENV)
	@echo '$(MODULES)' | cmp -s - $@ || echo '$(MODULES)' > $@

$(STAMP): pyproject.toml $(CONTRIB) $(MODULE_LIST)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	rm -rf build *.egg-info $(addsuffix build,$(dir $(CONTRIB)))  # egg-info: a renamed dist's stays
	$(BIN)/pip uninstall --quiet -y mesh 2>/dev/null || true  # this project's name before meshceptor
	$(BIN)/pip install --quiet -e '.[test]' $(EDITABLE)
	@for d in $(dir $(CONTRIB)); do echo "installing $$d"; $(BIN)/pip install --quiet -e $$d $(EDITABLE) || exit 1; done
	touch $(STAMP)

install: $(STAMP) bytecode

# Byte-compile the linked sources, so that start-up does not compile them even where
# PYTHONDONTWRITEBYTECODE is set (only changed files are compiled again).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q build $(addsuffix build,$(dir $(CONTRIB))) > /dev/null

demo: install
	$(BIN)/python examples/demo.py

test: install
	$(BIN)/pytest -q $(PYTEST_ARGS) tests $(wildcard contrib/*/tests)

test-all: install
	$(BIN)/pytest -q -m "" tests $(wildcard contrib/*/tests)

clean:
	rm -rf $(VENV) build $(addsuffix build,$(dir $(CONTRIB))) *.egg-info
