#!/usr/bin/env bash
# Lint, format-check and type-check the tree: ruff and mypy for Python, and eslint, prettier and
# stylelint for the JupyterLab extension (configured as JupyterLab's extension template does).
# Settings: pyproject.toml ([tool.ruff], [tool.mypy]), labextension/eslint.config.mjs and the
# "prettier" / "stylelint" sections of labextension/package.json.
#
#   scripts/lint.sh          check; exits 1 if any tool reports anything
#   scripts/lint.sh --fix    ruff check --fix, ruff format, eslint --fix, prettier --write and
#                            stylelint --fix, then every check (format included) on the result
#
#   LINT_FORMAT=0   leave out the format checks (ruff format --check, prettier --check, eslint's
#                   prettier rule) while the tree still waits for its one reformat (`--fix`)
#   PYTHON, JLPM    the interpreter with ruff and mypy, and JupyterLab's jlpm (default: .venv's)
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
JLPM=${JLPM:-$PWD/.venv/bin/jlpm}
LINT_FORMAT=${LINT_FORMAT:-1}
export PATH="$(dirname "$JLPM"):$PATH"  # the package.json scripts call jlpm by name
failed=()

step() {  # step NAME COMMAND...: run one tool, remember it if it reported anything
  echo "[lint] $1"
  if ! "${@:2}"; then
    failed+=("$1")
  fi
}

in_ext() { (cd labextension && "$@"); }

missing=""
"$PYTHON" -m ruff --version >/dev/null 2>&1 || missing="ruff and mypy ($PYTHON)"
[ -x labextension/node_modules/.bin/eslint ] || missing="${missing:+$missing, }the extension's node_modules"
if [ -n "$missing" ]; then
  echo "[lint] missing: $missing; run \`make setup\` first" >&2
  exit 2
fi

if [ "${1:-}" = "--fix" ]; then
  # Each fixer runs even when one before it left something unfixed; the checks below report it.
  "$PYTHON" -m ruff check --fix --quiet . || true
  "$PYTHON" -m ruff format --quiet . || true
  in_ext "$JLPM" stylelint || true
  in_ext "$JLPM" prettier || true
  in_ext "$JLPM" eslint || true
  LINT_FORMAT=1
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/lint.sh [--fix]" >&2
  exit 2
fi

step "ruff check" "$PYTHON" -m ruff check --quiet .
[ "$LINT_FORMAT" = 1 ] && step "ruff format --check" "$PYTHON" -m ruff format --check --quiet .
step "mypy" "$PYTHON" -m mypy --no-error-summary
if [ "$LINT_FORMAT" = 1 ]; then
  step "eslint" in_ext "$JLPM" eslint:check
  step "prettier --check" in_ext "$JLPM" prettier:check
else
  step "eslint" in_ext "$JLPM" eslint:check --rule "prettier/prettier: off"
fi
step "stylelint" in_ext "$JLPM" stylelint:check

if [ ${#failed[@]} -gt 0 ]; then
  echo "[lint] FAILED: ${failed[*]} (scripts/lint.sh --fix fixes what it can)" >&2
  exit 1
fi
echo "[lint] no findings"
