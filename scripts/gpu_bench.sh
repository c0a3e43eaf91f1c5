#!/usr/bin/env bash
# The GPU speed check: one command on the device machine, <= 8 minutes, every figure in $OUT:
#   env.txt          nvidia-smi, torch/CUDA/cuDNN, onnxruntime providers, pip list, and which
#                    TensorRT (libnvinfer) / cuDNN libraries exist there
#   compare_fp32.txt defvos (eager and CUDA graphs) vs the official DeAOT-T and AOT-T at 240p
#                    and 480p with 1/5/10 objects, then the 1,000-frame run (480p, 5 objects):
#                    latency and memory at its start and end
#   graphs.txt       python -m defvos_core.bench with CUDA graphs off, then on
#   compare_fp16.txt the comparison in fp16 (the official engines: autocast), no long run
#   onnxruntime.txt  the onnxruntime backend on each provider found there
#
# The official engine is the `deaotpy` wheel (module `aot`), installed there with --no-deps
# from the git-ignored .device_data/wheels/. Put it there first, here:
#   scripts/gpu_bench.sh prepare      # pip download deaotpy==1.11.0 --no-deps (DEAOT_WHEEL=path:
#                                     # copy that wheel instead)
# then run on the device machine (carry: [".device_data/wheels"]):
#   bash scripts/gpu_bench.sh         # OUT=$OUT there
# and here, the same path on the CPU with tiny settings (~30 s):
#   SMOKE=1 OUT=/tmp/gb bash scripts/gpu_bench.sh
#
# Env: OUT (default out/gpu_bench), PYTHON (default python3; .venv/bin/python with SMOKE when
# present), DEVICE (default cuda; cpu with SMOKE), BUDGET (seconds for all parts, default 470).
# A part that fails or runs out of time leaves what it printed and the others still run.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
WHEELS=.device_data/wheels

if [ "${1:-}" = "prepare" ]; then
    mkdir -p "$WHEELS"
    if [ -n "${DEAOT_WHEEL:-}" ]; then
        cp "$DEAOT_WHEEL" "$WHEELS/"
    else
        "${PYTHON:-$REPO/.venv/bin/python}" -m pip download --no-deps -d "$WHEELS" deaotpy==1.11.0
    fi
    ls -l "$WHEELS"
    echo "carry $WHEELS (git-ignored) to the device machine"
    exit 0
fi

SMOKE="${SMOKE:-0}"
OUT="${OUT:-out/gpu_bench}"
if [ "$SMOKE" = "1" ] && [ -x .venv/bin/python ]; then
    PYTHON="${PYTHON:-.venv/bin/python}"
fi
export PYTHON="${PYTHON:-python3}"
BUDGET="${BUDGET:-470}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export DEFVOS_CACHE_DIR="${DEFVOS_CACHE_DIR:-$(mktemp -d)}"  # ONNX exports of this run

if [ "$SMOKE" = "1" ]; then
    DEVICE="${DEVICE:-cpu}"
    COMPARE=(--sizes 64 --objects 1,2 --frames 2 --warmup 1)
    LONG=(--long 12 --long-size 64 --long-objects 2)
    BENCH=(--sizes 64 --objects 1 --frames 2 --warmup 1 --long 0)
    ONNX=(--sizes 64 --objects 1 --frames 2 --warmup 1 --long 0)
else
    DEVICE="${DEVICE:-cuda}"
    COMPARE=(--sizes 240,480 --objects 1,5,10 --frames 200 --warmup 10)
    LONG=(--long 1000 --long-size 480 --long-objects 5)
    BENCH=(--sizes 240,480 --objects 1,5,10 --frames 100 --warmup 10 --long 200)
    ONNX=(--sizes 240 --objects 1,5 --frames 30 --warmup 5 --long 0)
fi
OURS="defvos"
[ "${DEVICE%%:*}" = "cuda" ] && OURS="defvos,defvos-graphs"

# The official engine: importable already, or from the carried wheel (no dependencies).
if ! "$PYTHON" -c "import aot" 2>/dev/null; then
    wheel=$(ls "$WHEELS"/deaotpy-*.whl 2>/dev/null | head -n 1)
    if [ -n "$wheel" ]; then
        site="$(mktemp -d)"
        "$PYTHON" -m pip install -q --no-deps --no-index --no-compile --target "$site" "$wheel" \
            && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_bench: no $WHEELS/deaotpy-*.whl and no module 'aot': the official engines" \
             "are skipped (scripts/gpu_bench.sh prepare, then carry $WHEELS)"
    fi
fi

START=$SECONDS
# part FILE SECONDS COMMAND...: run COMMAND with the lesser of SECONDS and the time left,
# its output appended to $OUT/FILE and shown.
part() {
    local file="$1" limit="$2"
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "== skipped (budget spent): $*" | tee -a "$OUT/$file"
        return 0
    fi
    echo "== $(date +%T) ($limit s max) $*" | tee -a "$OUT/$file"
    if declare -F "$1" >/dev/null; then  # a function of this script: run it in a child bash
        export -f "$1"
        set -- bash -c "$1"
    fi
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$OUT/$file"
    local status=${PIPESTATUS[0]}
    [ "$status" -ne 0 ] && echo "== exit $status (124: out of time)" | tee -a "$OUT/$file"
    return 0
}

environment() {
    nvidia-smi || echo "nvidia-smi: not available"
    "$PYTHON" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version(), "gpu",
      torch.cuda.get_device_name() if torch.cuda.is_available() else None)
try:
    import onnxruntime
    print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
except ImportError as error:
    print("onnxruntime:", error)
PY
    "$PYTHON" -m pip list 2>/dev/null | grep -iE "torch|onnx|tensorrt|nvidia|deaot|numpy|opencv"
    echo "-- ldconfig: libnvinfer / libcudnn"
    ldconfig -p 2>/dev/null | grep -iE "libnvinfer|libcudnn" || echo "(none)"
    echo "-- files: libnvinfer* / libcudnn* under /usr /opt"
    find /usr /opt -xdev \( -name "libnvinfer*.so*" -o -name "libcudnn*.so*" \) 2>/dev/null \
        | head -n 40
}

onnx_providers() {
    "$PYTHON" - <<'PY'
import onnxruntime
aliases = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda",
           "CPUExecutionProvider": "cpu"}
print(" ".join(alias for name, alias in aliases.items()
               if name in onnxruntime.get_available_providers()))
PY
}

part env.txt 60 environment
part compare_fp32.txt 260 "$PYTHON" -m defvos_core.benchmarks.compare_deaot --device "$DEVICE" \
    "${COMPARE[@]}" "${LONG[@]}" --long-engines "$OURS,DeAOT-T"
part graphs.txt 45 "$PYTHON" -m defvos_core.bench --device "$DEVICE" "${BENCH[@]}"
part graphs.txt 45 "$PYTHON" -m defvos_core.bench --device "$DEVICE" "${BENCH[@]}" --cuda-graphs
if [ "${DEVICE%%:*}" = "cuda" ]; then
    part compare_fp16.txt 100 "$PYTHON" -m defvos_core.benchmarks.compare_deaot \
        --device "$DEVICE" --fp16 "${COMPARE[@]}" --long 0
else
    echo "== skipped: fp16 needs CUDA (device $DEVICE)" | tee -a "$OUT/compare_fp16.txt"
fi
for provider in $(onnx_providers 2>/dev/null); do
    part onnxruntime.txt 60 "$PYTHON" -m defvos_core.bench --backend onnxruntime \
        --providers "$provider" "${ONNX[@]}"
done
echo "gpu_bench: $((SECONDS - START)) s; files in $OUT:"
ls -l "$OUT"
