#!/usr/bin/env bash
# Build the defvos_interfaces messages (rosidl_generate_interfaces, ament_cmake) against the
# ROS 2 prefix that the registry's ros-kilted-* wheels lay out in the venv, and install them
# into that same prefix: Python package in site-packages, lib*.so in <venv>/lib, share/.
# Called by scripts/setup.sh after the wheels are installed. Cached: a no-op while the
# interface files, this script and the venv's set-up stamp are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DEFVOS_VENV:-.venv}
PREFIX="$(cd "$VENV" && pwd)"
PYTHON="$PREFIX/bin/python"
SOURCE=defvos_interfaces
BUILD=build/defvos_interfaces
STAMP="$PREFIX/.defvos-interfaces"
MANIFEST="$PREFIX/.defvos-interfaces-installed"  # files of the last install, removed first

stamp_of() {
  { find "$SOURCE" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum scripts/build_interfaces.sh
    cat "$PREFIX/.defvos-setup" 2>/dev/null || true; } | sha256sum | cut -c1-16
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of)" ]; then
  exit 0
fi
echo "building $SOURCE into $PREFIX"

# The registry's message wheels export the include directories of the container they were
# built in (/opt/python/cp311-cp311/...), which stops any downstream message build with
# "includes non-existent path": point them at this venv's Python and numpy headers.
"$PYTHON" - "$PREFIX" <<'EOF'
import re
import sys
import sysconfig
from pathlib import Path

import numpy

python_include = sysconfig.get_paths()['include']
if not Path(python_include, 'Python.h').is_file():
    sys.exit(f'build_interfaces: {python_include}/Python.h not found: the Python headers '
             '(Debian: python3.11-dev) are needed to build message packages')
numpy_include = numpy.get_include()
for export in Path(sys.argv[1], 'share').glob('*/cmake/*__rosidl_generator_pyExport.cmake'):
    text = export.read_text()
    fixed = re.sub(r'[^";]*/include/python3\.\d+(?=[";])', python_include, text)
    fixed = re.sub(r'[^";]*/numpy/(?:_)?core/include(?=[";])', numpy_include, fixed)
    if fixed != text:
        export.write_text(fixed)
EOF

# Stale cache entries of another prefix would leak into this build: start clean.
rm -rf "$BUILD"
mkdir -p "$BUILD"
LOG="$BUILD/build.log"
logged() {  # run a step with its output in $LOG; on failure show the end of it
  "$@" >>"$LOG" 2>&1 || { tail -n 40 "$LOG"; echo "build_interfaces: '$*' failed, see $LOG"; exit 1; }
}
export AMENT_PREFIX_PATH="$PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$PREFIX/bin:$PATH"
logged cmake -S "$SOURCE" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_INSTALL_PREFIX="$PREFIX" -DPython3_EXECUTABLE="$PYTHON"
logged cmake --build "$BUILD" -j "$(nproc)"
if [ -f "$MANIFEST" ]; then
  xargs -d '\n' rm -f <"$MANIFEST"
fi
logged cmake --install "$BUILD"
cp "$BUILD/install_manifest.txt" "$MANIFEST"
stamp_of >"$STAMP"
echo "$SOURCE installed into $PREFIX"
