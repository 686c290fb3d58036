#!/usr/bin/env bash
# Runs the HTTP end-to-end tests outside ctest: tests/http/run.sh [path/to/bmserve]
set -euo pipefail
cd "$(dirname "$0")"
export BMSERVE_BIN=$(realpath "${1:-../../build/server/bmserve}")
[[ -d node_modules/openai ]] || npm install --no-audit --no-fund --loglevel=error
exec node --test ./*.test.mjs
