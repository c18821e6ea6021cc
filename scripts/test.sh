#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian/Ubuntu machine, lint, run the tests.
#   bash scripts/test.sh [pytest args]          every test (CI runs this)
#   bash scripts/test.sh --fast [pytest args]   the edit loop: no apt, no slow or browser tests
# The full run needs root or sudo for apt-get (Chromium for the browser tests; Playwright drives
# Debian's build, it never downloads a browser of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
if [ "${1:-}" = "--fast" ]; then
    fast=1
    shift
fi

if [ "$fast" = 0 ] && ! command -v chromium >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
python -m pip install -q -r requirements-dev.txt

ruff check .
mkdir -p artifacts
if [ "$fast" = 1 ]; then
    python -m pytest -q -rs -m "not slow and not browser" "$@"
else
    python -m pytest -q -rs "$@"
fi
