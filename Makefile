# The two commands a new user types are `make demo` and `make test`; both install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dpsnet-installed
# Test workers: the suite is CPU-bound; each worker pins torch to one thread (tests/conftest.py).
PYTEST_WORKERS ?= 2

.PHONY: install test lint format demo bench clean

install: $(STAMP)

$(STAMP): setup.py scripts/install.sh scripts/install_detectron2.py
	bash scripts/install.sh
	touch $(STAMP)

test: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15 tests

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

demo: install
	$(PY) tools/run_demo.py

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf output work_dirs
