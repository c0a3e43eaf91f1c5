#!/usr/bin/env bash
# The README's demo command: set up the venv if needed, then play the shipped sample clip into
# the ROS 2 node over DDS, record its masks and write the overlay video to demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${DEFVOS_VENV:-.venv}
export AMENT_PREFIX_PATH="$(cd "$VENV" && pwd)${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$(cd "$VENV" && pwd)/bin:$PATH"
exec "$VENV/bin/python" -m defvos_ros.demo --out "${1:-demo_out}"
