#!/usr/bin/env bash
# One-time (idempotent) set-up of a development venv in .venv: PyTorch (CPU wheel), defvos with
# its extras, real ROS 2 Kilted rclpy + messages and the tools to build message packages (PyPI
# ros-kilted-* wheels), then the defvos_interfaces messages built into the venv by
# scripts/build_interfaces.sh. ROS 2's launch stack has no PyPI wheels: launch tests skip
# unless a ROS 2 install is sourced. Re-runs are no-ops until setup.py, this script, the
# interface files or their build script change.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${DEFVOS_VENV:-.venv}
export DEFVOS_VENV="$VENV"  # for scripts/build_interfaces.sh
TORCH_SPEC=${DEFVOS_TORCH_SPEC:-torch==2.13.0}

stamp_of() { cat setup.py scripts/setup.sh | sha256sum | cut -c1-16; }
if [ -f "$VENV/.defvos-setup" ] && [ "$(cat "$VENV/.defvos-setup")" = "$(stamp_of)" ]; then
  # packages are current; the interfaces keep their own stamp (a no-op when unchanged)
  exec bash scripts/build_interfaces.sh
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip >/dev/null
# The CPU wheel first, so the package's torch>=2.1 range is already met.
$PIP install "$TORCH_SPEC"
$PIP install -e ".[onnx,train,bag,test]"
# The official DeAOT engine, a benchmark peer only (defvos_core/benchmarks, test_benchmarks),
# never a dependency of defvos: without its declared torchvision and CUDA extension.
$PIP install --no-deps "deaotpy==1.11.0"
# Exact registry names: never the unrelated registry 'launch' 0.1.3. The ament_cmake/rosidl
# packages, catkin-pkg, empy 3 (the generators use its API) and lark-parser build
# defvos_interfaces.
ROS_PKGS="ros-kilted-rclpy ros-kilted-sensor-msgs ros-kilted-std-msgs ros-kilted-std-srvs
  ros-kilted-geometry-msgs ros-kilted-visualization-msgs
  ros-kilted-builtin-interfaces ros-kilted-diagnostic-msgs ros-kilted-lifecycle-msgs
  ros-kilted-rmw-fastrtps-cpp ros-kilted-ament-index-python
  ros-kilted-ament-flake8 ros-kilted-ament-pep257
  ros-kilted-ament-cmake ros-kilted-ament-cmake-include-directories ros-kilted-ament-cmake-python
  ros-kilted-ament-cmake-ros-core ros-kilted-ament-package ros-kilted-rosidl-default-generators
  ros-kilted-rosidl-core-generators ros-kilted-rosidl-default-runtime
  catkin-pkg empy==3.3.4 lark-parser numpy"
$PIP install $ROS_PKGS
# xmllint for the package.xml lint test (Debian's libxml2-utils), where apt is usable.
if ! command -v xmllint >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq libxml2-utils >/dev/null 2>&1 ||
   { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libxml2-utils >/dev/null 2>&1; }) ||
    echo "note: libxml2-utils not installed: the xmllint test will skip"
fi
stamp_of > "$VENV/.defvos-setup"
bash scripts/build_interfaces.sh
echo "defvos set-up done in $VENV"
