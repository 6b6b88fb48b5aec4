# Two entry points (see README.md): `make quickstart` runs the main job, `make test` the tests.
# Both create .venv and install everything on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# Only the tests default to the PACS copy beside the checkout; the product never assumes a path.
TEST_DATA_ROOT ?= $(abspath ../shared/PACS)

# The tests run on the versions the image ships (deploy/constraints.txt), not on whatever the
# registry holds that day; packages only the tests need are not pinned there.
$(VENV)/.installed: pyproject.toml deploy/constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test]" -c deploy/constraints.txt
	touch $@

install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	@test -n "$$ASHA_TUNE_DATA_ROOT" || { echo "set ASHA_TUNE_DATA_ROOT to your PACS folder"; exit 2; }
	$(VENV)/bin/asha-tune launch --space quickstart

test: $(VENV)/.installed
	ASHA_TUNE_DATA_ROOT=$${ASHA_TUNE_DATA_ROOT:-$(TEST_DATA_ROOT)} RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
		$(PY) -m pytest $(PYTEST_ARGS)

# The fast tier: no Ray, no real PACS, about two minutes; run it on every change.
test-fast: $(VENV)/.installed
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check asha_tune tests benchmarks
	$(VENV)/bin/ruff format --check asha_tune tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

.PHONY: install quickstart test test-fast lint
