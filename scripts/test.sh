#!/usr/bin/env bash
# The README's test command: set up the venv if needed, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${DEFVOS_VENV:-.venv}
export AMENT_PREFIX_PATH="$(cd "$VENV" && pwd)${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$(cd "$VENV" && pwd)/bin:$PATH"
exec "$VENV/bin/python" -m pytest test -q -p no:cacheprovider "$@"
