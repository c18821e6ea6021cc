#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian/Ubuntu machine, lint, run every test.
#   bash scripts/test.sh [pytest args]
# Needs root or sudo for apt-get (Chromium for the browser tests; Playwright drives Debian's
# build, it never downloads a browser of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
python -m pip install -q -r requirements-dev.txt

ruff check .
mkdir -p artifacts
python -m pytest -q -rs "$@"
