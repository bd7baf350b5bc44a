#!/usr/bin/env bash
# The whole check, as CI runs it: setup, ruff (lint + format), mypy, import-linter, pytest.
# Extra arguments go to pytest (paths relative to the repository root), e.g.
#   bash scripts/test.sh -m "not slow" tests/unit
#   bash scripts/test.sh --lint-only          # setup + static checks, no pytest
# Stops at the first failing stage and exits with its code; "no tests collected" (pytest's 5)
# is a failure too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LINT_ONLY=0
if [[ "${1:-}" == "--lint-only" ]]; then
  LINT_ONLY=1
  shift
fi

bash scripts/setup.sh

BIN=.venv/bin

stage() {
  local name="$1"
  shift
  echo "== $name"
  local rc=0
  "$@" || rc=$?
  if ((rc != 0)); then
    echo "test.sh: FAILED: $name (exit $rc)" >&2
    exit "$rc"
  fi
}

stage "ruff check" "$BIN/ruff" check .
stage "ruff format --check" "$BIN/ruff" format --check .
stage "mypy" "$BIN/mypy"
stage "import-linter" "$BIN/lint-imports" --no-logo --no-cache
if ((LINT_ONLY)); then
  echo "test.sh: static checks passed"
  exit 0
fi

bash scripts/browser.sh
echo "== pytest"
rc=0
"$BIN/python" -m pytest -q --durations=15 "$@" || rc=$?
if ((rc == 5)); then
  echo "test.sh: FAILED: pytest collected no tests (exit 5)" >&2
  exit 5
elif ((rc != 0)); then
  echo "test.sh: FAILED: pytest (exit $rc)" >&2
  exit "$rc"
fi
echo "test.sh: all checks passed"
