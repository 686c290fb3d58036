#!/usr/bin/env bash
# One command from a fresh Debian machine to a running server: installs what is missing, builds,
# and serves. With no arguments it serves the built-in demo model (random weights, byte-level
# tokenizer); pass `--model DIR` (and any other `bmserve serve` flag) to serve a real checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
if [[ $# -eq 0 ]]; then set -- --demo; fi
exec ./build/server/bmserve serve "$@"
