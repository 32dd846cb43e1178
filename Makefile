# Two commands on a fresh clone (see the README's "Install, try, test"):
#   make demo   create .venv if needed, install the package, predict depth + normals of the bundled
#               1024x512 example with the embedded default model (outputs/demo/)
#   make test   install what the tests need (and try to install Debian chromium for the browser test),
#               then run the whole test suite
# Every pip install goes through constraints.txt (it pins the CPU build of torch).
# Variables: PYTHON (interpreter that creates .venv), VENV (its folder), PYTEST_ARGS, DEMO_OUT.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
DEMO_OUT ?= outputs/demo
DEMO_IMAGE ?= pager/assets/examples/indoor_room_1024.jpg
PYTEST_ARGS ?=

.PHONY: demo test install install-dev chromium clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Stamp files: reinstall only when the dependency lists change.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/pager predict $(DEMO_IMAGE) --out $(DEMO_OUT) --overwrite
	@echo "demo: depth and normals of $(DEMO_IMAGE) are in $(DEMO_OUT)/"

# The browser test of the Gradio app needs Debian's chromium; without it that test is skipped.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "warning: could not install chromium; the browser test will be skipped" >&2; \
	else echo "note: chromium not found (Debian: apt-get install chromium); the browser test will be skipped" >&2; fi

# pytest exit code 5 = nothing collected: a failure here (a broken checkout must not pass).
test: $(VENV)/.installed-dev chromium
	@status=0; $(BIN)/python -m pytest -q $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$status

clean-venv:
	rm -rf $(VENV)
