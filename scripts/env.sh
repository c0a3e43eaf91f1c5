# Sourced by scripts/test.sh and scripts/demo.sh: set up the venv if needed, then point PATH
# and AMENT_PREFIX_PATH at it (launch_ros finds packages and executables through them).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
VENV=${DEFVOS_VENV:-.venv}
VENV_PREFIX="$(cd "$VENV" && pwd)"
export AMENT_PREFIX_PATH="$VENV_PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$VENV_PREFIX/bin:$PATH"
