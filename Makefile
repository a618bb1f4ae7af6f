# The two commands of the README:
#   make lab    — set up .venv and the JupyterLab extension if needed, then JupyterLab on the
#                 quick-start notebook (embedded model)
#   make test   — set up if needed, then the linters (`make lint`, seconds; any finding stops it),
#                 then every test: Python (pytest), the extension's unit tests (jest) and its UI
#                 tests (Galata in Debian's Chromium, a real JupyterLab, kernel and the embedded
#                 model); fails if any of the three fails
# Both are idempotent; the first run on a fresh machine takes a few minutes (torch,
# transformers, the extension's JS dependencies).
PY := .venv/bin/python
JLPM := $(CURDIR)/.venv/bin/jlpm
JUPYTER_CODELLAMA_CACHE ?= $(CURDIR)/.cache/jupyter_codellama
export JUPYTER_CODELLAMA_CACHE
export PATH := $(CURDIR)/.venv/bin:$(PATH)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
LAB_ARGS ?=
# 1: `make lint` also checks formatting (ruff format --check, prettier --check); `scripts/lint.sh
# --fix` formats. 0 leaves the format checks out (a branch waiting for its reformat).
LINT_FORMAT ?= 1

.PHONY: setup setup-ui lab lint test test-python test-js test-ui bench clean

setup:
	@bash scripts/bootstrap.sh

setup-ui:
	@BOOTSTRAP_UI=1 bash scripts/bootstrap.sh

lab: setup
	$(PY) -m jupyterlab $(ROOT_FLAG) $(LAB_ARGS) example_notebooks/01_quickstart.ipynb

# ruff, mypy, eslint, prettier, stylelint (scripts/lint.sh; `scripts/lint.sh --fix` fixes).
lint: setup
	@LINT_FORMAT=$(LINT_FORMAT) PYTHON=$(PY) JLPM=$(JLPM) bash scripts/lint.sh

# Runs all three suites even when one fails, then fails if any did.
test: setup-ui lint
	@failed=""; \
	$(MAKE) --no-print-directory test-python || failed="$$failed python"; \
	$(MAKE) --no-print-directory test-js || failed="$$failed jest"; \
	$(MAKE) --no-print-directory test-ui || failed="$$failed galata"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make test: python, jest and galata suites all passed"

test-python:
	$(PY) -m pytest -q -p no:cacheprovider

test-js:
	cd labextension && $(JLPM) test

test-ui:
	cd labextension && $(JLPM) test:ui

bench: setup
	$(PY) benchmarks/engine.py

clean:
	rm -rf .venv .cache build dist *.egg-info jupyter_codellama/labextension \
	  labextension/node_modules labextension/lib labextension/.build-stamp \
	  .mypy_cache .ruff_cache labextension/.eslintcache labextension/.stylelintcache
