#!/usr/bin/env bash
# One GPU call: a training recipe's cross-validation (or its final training) into OUT.
#
#   scripts/gpu_run.sh --pack DATA             # here, once: DATA (davis2016-train-240p/ +
#                                              # ecssd/) -> .device_data/ (carry it, ~37 MiB)
#   scripts/gpu_run.sh RECIPE OUT [ARGS...]    # there: RECIPE = teacher_cv | student_cv |
#                                              # encoder_cv | final (config/training/recipes/)
#                                              # or a YAML path; ARGS go to defvos_core.crossval
#   SMOKE=1 scripts/gpu_run.sh RECIPE OUT      # the same path on CPU: tiny configs, 2 steps,
#                                              # 2 folds, about a minute
#
# Data: $DEFVOS_DATA, else the packed .device_data/ (its fp16 ImageNet trunks go on
# PYTHONPATH). Runs (checkpoints, every fold's weights) stay in $RUNS (default
# runs/gpu_run/<recipe>, <recipe>_smoke with SMOKE); a re-run resumes them. OUT gets at most 8 files of <= 16 MiB:
# run.log (no progress bars; each fold's training log appended), crossval.json and
# crossval.md, or for a final recipe final.json and each stage's fp16 weights.
# SWEEP=FILE (a cross-validation recipe): then every setting of that inference sweep is
# scored on the folds' weights of stage SWEEP_STAGE (default: the recipe's last; crossval
# --evaluate --sweep): OUT/sweep.json + .md.
# Env: PYTHON (default python3), RUNS, SMOKE, SWEEP, SWEEP_STAGE. Exit code: the crossval's (1: a fold
# failed), else the sweep's.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"
if [ "${1:-}" = "--pack" ]; then
    [ $# -eq 2 ] || { echo "usage: $0 --pack DATA" >&2; exit 2; }
    exec "$PYTHON" -m defvos_core.training.device_data --data "$2" --dest .device_data
fi
[ $# -ge 2 ] || { echo "usage: $0 RECIPE OUT [crossval args] | $0 --pack DATA" >&2; exit 2; }
RECIPE="$1" OUT="$2"
shift 2
case "$RECIPE" in
    *.yaml) FILE="$RECIPE" ;;
    *) FILE="config/training/recipes/$RECIPE.yaml" ;;
esac
[ -f "$FILE" ] || { echo "gpu_run: no recipe $FILE" >&2; exit 2; }
NAME="$(basename "$FILE" .yaml)"
[ "${SMOKE:-0}" = 1 ] && NAME="${NAME}_smoke"
RUNS="${RUNS:-runs/gpu_run/$NAME}"
DATA="${DEFVOS_DATA:-.device_data}"
[ -d "$DATA" ] || { echo "gpu_run: no data folder $DATA (set DEFVOS_DATA or --pack)" >&2; exit 2; }
if [ -d .device_data/pylib ]; then
    export PYTHONPATH="$REPO/.device_data/pylib${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
ARGS=(--recipe "$FILE" --data "$DATA" --out "$RUNS" --resume "$@")
[ "${SMOKE:-0}" = 1 ] && ARGS+=(--smoke)
mkdir -p "$OUT"
{ echo "== gpu_run $NAME $(date -u +%FT%TZ): $PYTHON -m defvos_core.crossval ${ARGS[*]}"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
} > "$OUT/run.log" 2>&1 || true
status=0
"$PYTHON" -m defvos_core.crossval "${ARGS[@]}" 2>&1 | tee -a "$OUT/run.log" || status=$?
for log in "$RUNS"/*/log.txt; do
    [ -f "$log" ] && { echo "== $log"; cat "$log"; } >> "$OUT/run.log"
done
if [ -n "${SWEEP:-}" ] && [ "$status" = 0 ] && [ ! -f "$RUNS/final.json" ]; then
    DEVICE_ARG=cpu
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        2> /dev/null && DEVICE_ARG=cuda
    SWEEP_ARGS=(--evaluate "$RUNS" --data "$DATA" --sweep "$SWEEP" --device "$DEVICE_ARG"
                --json "$OUT/sweep.json")
    [ -n "${SWEEP_STAGE:-}" ] && SWEEP_ARGS+=(--stage "$SWEEP_STAGE")
    [ "${SMOKE:-0}" = 1 ] && SWEEP_ARGS+=(--max-frames 3 --tracker size=64)
    echo "== sweep: $PYTHON -m defvos_core.crossval ${SWEEP_ARGS[*]}" >> "$OUT/run.log"
    "$PYTHON" -m defvos_core.crossval "${SWEEP_ARGS[@]}" 2>&1 | tee -a "$OUT/run.log" \
        || status=$?
fi
if [ -f "$RUNS/final.json" ]; then
    cp "$RUNS/final.json" "$OUT/"
    cp "$RUNS"/final/*.pt "$OUT/" 2> /dev/null || true
else
    cp "$RUNS/crossval.json" "$RUNS/crossval.md" "$OUT/" 2> /dev/null || true
fi
echo "== done $(date -u +%FT%TZ), exit $status; OUT: $(ls "$OUT" | tr '\n' ' ')" \
    | tee -a "$OUT/run.log"
exit "$status"
