#!/usr/bin/env bash
# Distillation ablation: students of the same schedule (equal steps, from the ImageNet
# encoder), one per variant, all distilled from the same frozen teacher (the shipped one by
# default), then held-out J&F of each in one table.
#
#   scripts/prepare_device_data.sh --backbones lite0  # here: data + the student's backbone
#   OUT=/some/dir scripts/ablation.sh                  # on one GPU (carry .device_data)
#   CONFIG=config/training/cpu_student.yaml DEVICE=cpu PARALLEL=0 WORKERS=1 MAX_MINUTES=0 \
#       STEPS=600 scripts/ablation.sh                  # the CPU version
#   SMOKE=1 OUT=/tmp/x scripts/ablation.sh             # the path on CPU, tiny settings
#
# Variants (VARIANTS, space-separated; default all but selfsup):
#   supervised    the student without a teacher (CE + Jaccard only: --stage teacher)
#   distilled     att + intra + inter + supervised (CONFIG as it is)
#   no_attention / no_intra / no_inter   distilled with that term's weight at 0
#   selfsup       teacher-only targets after the first frame (distill.self_supervised)
# Env: OUT, CONFIG (the student config, default config/training/student.yaml), STEPS (per
# variant, default 300), MAX_MINUTES (a safety limit per variant, default 6, 0 = none; a
# variant stopped by it is marked in the table), TEACHER (default
# defvos_core/assets/teacher.pt), WORKERS (loader workers per variant, default 3),
# PARALLEL (1 = all variants at once, the default: a batch-16 student leaves the GPU mostly
# idle; 0 = one after the other), DATA, DEVICE (evaluation; default cuda), PYTHON, RUNS,
# EXTRA (more --set options for every variant). $OUT gets ablation.md (the table),
# ablation.json and ablation.log. Re-running resumes each variant from its checkpoint.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-out/ablation}"
RUNS="${RUNS:-runs/ablation}"
PYTHON="${PYTHON:-python3}"
VARIANTS="${VARIANTS:-supervised distilled no_attention no_intra no_inter}"
TEACHER="${TEACHER:-defvos_core/assets/teacher.pt}"
mkdir -p "$OUT" "$RUNS"
LOG="$OUT/ablation.log"
# shellcheck source=scripts/device_env.sh
source scripts/device_env.sh

if [ "${SMOKE:-0}" = "1" ]; then
    CONFIG=config/training/tiny_cpu_student.yaml
    COMMON=(--set steps="${STEPS:-2}" --set device=cpu --set data.num_workers="${WORKERS:-0}")
    EVAL=(--device cpu --size 64 --max-frames 6 --sequences bear)
    if [ -z "${TEACHER_SET:-}" ]; then  # a tiny teacher of the tiny student's shape
        "$PYTHON" -m defvos_core.train --config config/training/tiny_cpu_teacher.yaml --resume \
            --set steps=2 --set validation.enabled=false --set "data.root=$DATA" \
            --set "run_dir=$RUNS/tiny_teacher" --set "export.weights=$RUNS/tiny_teacher.pt" \
            >> "$LOG" 2>&1
        TEACHER="$RUNS/tiny_teacher.pt"
    fi
else
    CONFIG="${CONFIG:-config/training/student.yaml}"
    COMMON=(--set steps="${STEPS:-300}" --set data.num_workers="${WORKERS:-3}")
    EVAL=(--device "${DEVICE:-cuda}")
fi
# Equal steps, lr decay by steps; the time limit only guards the device call.
COMMON+=(--set optim.time_schedule=false --set time_limit_minutes="${MAX_MINUTES:-6}"
         --set validation.enabled=false --set "data.root=$DATA"
         --set "distill.teacher_weights=$TEACHER")

variant_options() {
    case "$1" in
        supervised) echo "--stage teacher --set model_preset=student" ;;
        distilled) echo "" ;;
        no_attention) echo "--set distill.attention=0" ;;
        no_intra) echo "--set distill.intra=0" ;;
        no_inter) echo "--set distill.inter=0" ;;
        selfsup) echo "--set distill.self_supervised=true" ;;
        *) echo "ablation: unknown variant $1" >&2; return 2 ;;
    esac
}

run_variant() {
    local name="$1" options
    options="$(variant_options "$name")"
    # shellcheck disable=SC2086  # the options are words
    "$PYTHON" -m defvos_core.train --config "$CONFIG" --resume "${COMMON[@]}" $options \
        --set "run_dir=$RUNS/$name" --set "export.weights=$RUNS/$name/student.pt" \
        ${EXTRA:-} > "$RUNS/$name.log" 2>&1
    "$PYTHON" -m defvos_core.evaluate --weights "$RUNS/$name/student.pt" --data "$DATA" \
        --split val "${EVAL[@]}" --json "$RUNS/$name/eval.json" >> "$RUNS/$name.log" 2>&1
}

for name in $VARIANTS; do
    variant_options "$name" > /dev/null  # fail early on a typo
done
echo "== ablation: $VARIANTS, teacher $TEACHER, data $DATA $(date +%T)" | tee -a "$LOG"
failed=0
if [ "${PARALLEL:-1}" = "1" ]; then
    declare -A PIDS=()
    for name in $VARIANTS; do
        run_variant "$name" & PIDS[$name]=$!
    done
    for name in $VARIANTS; do
        wait "${PIDS[$name]}" || { echo "variant $name failed" | tee -a "$LOG"; failed=1; }
    done
else
    for name in $VARIANTS; do
        run_variant "$name" || { echo "variant $name failed" | tee -a "$LOG"; failed=1; }
    done
fi
for name in $VARIANTS; do
    { echo "== $name"; without_progress_bars "$RUNS/$name.log" | tail -n 25; } >> "$LOG"
done
"$PYTHON" -m defvos_core.training.ablation_report --runs "$RUNS" --variants $VARIANTS \
    --markdown "$OUT/ablation.md" --json "$OUT/ablation.json" | tee -a "$LOG"
echo "== done $(date +%T)" | tee -a "$LOG"
exit "$failed"
