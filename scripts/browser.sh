#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (the operator page); the tests
# drive it with Playwright (executable /usr/bin/chromium, no browser download). Idempotent.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "browser: chromium is missing and cannot be installed here (needs root and apt-get);" \
    "the browser tests will fail under CI=true and skip otherwise" >&2
  exit 0
fi
echo "browser: installing Debian's chromium (apt-get)"
LOG="$(mktemp -t elsa-browser.XXXXXX.log)"
trap 'rm -f "$LOG"' EXIT
if ! { apt-get install -y --no-install-recommends chromium >"$LOG" 2>&1 ||
  { apt-get update >>"$LOG" 2>&1 && apt-get install -y --no-install-recommends chromium >>"$LOG" 2>&1; }; }; then
  echo "browser: FAILED: apt-get install chromium" >&2
  tail -n 20 "$LOG" >&2
  exit 1
fi
