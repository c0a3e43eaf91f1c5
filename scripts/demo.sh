#!/usr/bin/env bash
# The README's demo command: set up the venv if needed, then play the shipped sample clip into
# the ROS 2 node over DDS, record its masks and write the overlay video to demo_out/.
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$VENV_PREFIX/bin/python" -m defvos_ros.demo --out "${1:-demo_out}"
