# The two commands of the README:
#   make lab    — set up .venv if needed, then JupyterLab on the quick-start notebook (embedded model)
#   make test   — set up .venv if needed, then every test
# Both are idempotent; the first run on a fresh machine takes a few minutes (torch, transformers).
PY := .venv/bin/python
JUPYTER_CODELLAMA_CACHE ?= $(CURDIR)/.cache/jupyter_codellama
export JUPYTER_CODELLAMA_CACHE
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
LAB_ARGS ?=

.PHONY: setup lab test bench clean

setup:
	@bash scripts/bootstrap.sh

lab: setup
	$(PY) -m jupyterlab $(ROOT_FLAG) $(LAB_ARGS) example_notebooks/01_quickstart.ipynb

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) benchmarks/engine.py

clean:
	rm -rf .venv .cache build dist *.egg-info
