#!/usr/bin/env bash
# One-time (idempotent) set-up of a development venv in .venv: PyTorch (CPU wheel), defvos with
# its extras, real ROS 2 Kilted rclpy + messages (PyPI ros-kilted-* wheels) and the Kilted launch
# stack (wheels in ../shared/wheels when present). Re-runs are no-ops until setup.py or this
# script change.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${DEFVOS_VENV:-.venv}
WHEELS=${DEFVOS_LAUNCH_WHEELS:-../shared/wheels}
TORCH_SPEC=${DEFVOS_TORCH_SPEC:-torch==2.13.0}

stamp_of() { cat setup.py scripts/setup.sh | sha256sum | cut -c1-16; echo "wheels:$([ -d "$WHEELS" ] && echo yes || echo no)"; }
if [ -f "$VENV/.defvos-setup" ] && [ "$(cat "$VENV/.defvos-setup")" = "$(stamp_of)" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip >/dev/null
# The CPU wheel first, so the package's torch>=2.1 range is already met.
$PIP install "$TORCH_SPEC"
$PIP install -e ".[onnx,train,bag,test]"
ROS_PKGS="ros-kilted-rclpy ros-kilted-sensor-msgs ros-kilted-std-msgs ros-kilted-std-srvs
  ros-kilted-rmw-fastrtps-cpp ros-kilted-lifecycle-msgs ros-kilted-ament-index-python
  ros-kilted-ament-flake8 ros-kilted-ament-pep257"
if [ -d "$WHEELS" ]; then
  # Exact pins: never the unrelated registry 'launch' 0.1.3.
  $PIP install --find-links "$WHEELS" $ROS_PKGS \
    "launch==3.8.8" "launch_xml==3.8.8" "launch_yaml==3.8.8" "launch_testing==3.8.8" \
    "launch_ros==0.28.6" "launch_testing_ros==0.28.6" \
    "composition-interfaces-placeholder==0.1.0" "pytest<9"
else
  echo "note: $WHEELS not found: launch/launch_testing not installed (launch tests will skip)"
  $PIP install $ROS_PKGS
fi
# xmllint for the package.xml lint test (Debian's libxml2-utils), where apt is usable.
if ! command -v xmllint >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq libxml2-utils >/dev/null 2>&1 ||
   { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libxml2-utils >/dev/null 2>&1; }) ||
    echo "note: libxml2-utils not installed: the xmllint test will skip"
fi
stamp_of > "$VENV/.defvos-setup"
echo "defvos set-up done in $VENV"
