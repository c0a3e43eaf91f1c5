#!/usr/bin/env bash
# The README's test command: set up the venv if needed, then run the whole suite.
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$VENV_PREFIX/bin/python" -m pytest test -q -p no:cacheprovider "$@"
