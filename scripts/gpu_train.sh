#!/usr/bin/env bash
# Teacher, then the distilled student, then held-out evaluation of both: the GPU recipe,
# sized for one H100 in <= 8 minutes (time limits cut each stage short if it runs slow).
#
#   scripts/prepare_device_data.sh              # here, once: data + fp16 backbones
#   OUT=/some/dir scripts/gpu_train.sh          # there (OUT defaults to out/gpu_train)
#   SMOKE=1 OUT=/tmp/x scripts/gpu_train.sh     # the same path on CPU with tiny settings
#   QUICK=1 OUT=/tmp/x scripts/gpu_train.sh     # the real configs for 20 steps per stage
#                                               # (first device call: check + step timings)
#   CONTINUE=1 OUT=/tmp/x scripts/gpu_train.sh  # start both stages from the shipped weights
#                                               # (prepare_device_data.sh --data-only)
#   STAGES=student CONTINUE=1 OUT=/tmp/x scripts/gpu_train.sh  # the student alone, distilled
#                                               # from TEACHER (default: the shipped teacher)
#   BASELINE=1 STUDENT_INIT=w.pt OUT=/tmp/x scripts/gpu_train.sh  # + the same student without
#                                               # a teacher, side by side (same init and steps)
#
# Env: OUT, DATA (default .device_data/davis2016-train-240p, else ../shared/data/...),
# NPROC (GPUs for torchrun; default all visible), PYTHON (default python3), SMOKE, and
# RUNS (run folders with checkpoints and TensorBoard logs; default runs/gpu_train, kept out
# of $OUT because a device call returns at most 8 files of <= 16 MB), TEACHER_STEPS /
# STUDENT_STEPS / TEACHER_MINUTES / STUDENT_MINUTES (override the configs' steps and time
# limits, e.g. sized from a QUICK run's seconds_per_step so the lr schedule completes),
# DEVICE (evaluation and bench device; default cuda, cpu with SMOKE),
# EXTRA_TEACHER / EXTRA_STUDENT (more --set options) and BENCH=1 (then the GPU speed
# benchmark of the new student, fp16 and fp32, goes to $OUT/bench.txt; BENCH_ARGS
# replaces its sizes/objects/frames), STAGES (default "teacher student"; "student" alone
# distills from TEACHER, default defvos_core/assets/teacher.pt), STUDENT_INIT (the student's
# starting weights; default ImageNet, or the shipped student with CONTINUE=1) and BASELINE=1
# (the same student trained without a teacher, side by side with the distilled one: same
# config, init and EXTRA_STUDENT, `--stage teacher --set model_preset=student`; exported as
# baseline.pt and evaluated). $OUT gets 7 files (8 with BENCH; 4 with the student alone):
# teacher.pt, student.pt (weights-only fp16), teacher_eval.json, student_eval.json,
# teacher_metrics.jsonl, student_metrics.jsonl and train.log; with BASELINE, baseline.pt and
# baseline_eval.json too, and the metrics files stay in $RUNS (train.log has their lines).
# Re-running resumes from the checkpoints in $RUNS.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-out/gpu_train}"
STAGES="${STAGES:-teacher student}"
case "$STAGES" in
    "teacher student") TEACHER="$OUT/teacher.pt" ;;
    student) TEACHER="${TEACHER:-defvos_core/assets/teacher.pt}" ;;
    *) echo "gpu_train: STAGES must be 'teacher student' or 'student', not '$STAGES'" >&2; exit 2 ;;
esac
RUNS="${RUNS:-runs/gpu_train}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
# shellcheck source=scripts/device_env.sh
source scripts/device_env.sh

if [ "${SMOKE:-0}" = "1" ]; then
    TEACHER_CONFIG=config/training/tiny_cpu_teacher.yaml
    STUDENT_CONFIG=config/training/tiny_cpu_student.yaml
    COMMON=(--set steps=2 --set device=cpu --set validation.max_frames=4)
    EVAL=(--device cpu --size 64 --max-frames 6 --sequences bear)
    LAUNCH=("$PYTHON" -m defvos_core.train)
else
    TEACHER_CONFIG=config/training/teacher.yaml
    STUDENT_CONFIG=config/training/student.yaml
    # Held-out J&F comes from defvos_core.evaluate below: no second pass inside training.
    COMMON=(--set validation.enabled=false)
    EVAL=(--device "${DEVICE:-cuda}")
    if [ "${QUICK:-0}" = "1" ]; then
        COMMON+=(--set steps=20 --set log_every=10 --set checkpoint_every=1000)
        EVAL+=(--max-frames 10 --sequences bear)
    fi
    NPROC="${NPROC:-$("$PYTHON" -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
    if [ "$NPROC" -gt 1 ]; then
        LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC"
                -m defvos_core.train)
    else
        LAUNCH=("$PYTHON" -m defvos_core.train)
    fi
fi

TEACHER_SET=() STUDENT_SET=()
[ -n "${TEACHER_STEPS:-}" ] && TEACHER_SET+=(--set "steps=$TEACHER_STEPS")
[ -n "${TEACHER_MINUTES:-}" ] && TEACHER_SET+=(--set "time_limit_minutes=$TEACHER_MINUTES")
[ -n "${STUDENT_STEPS:-}" ] && STUDENT_SET+=(--set "steps=$STUDENT_STEPS")
[ -n "${STUDENT_MINUTES:-}" ] && STUDENT_SET+=(--set "time_limit_minutes=$STUDENT_MINUTES")
if [ "${CONTINUE:-0}" = "1" ]; then
    # Train on from the shipped weights (a fresh optimizer, warm-up and schedule): the
    # ImageNet backbones are not needed, so .device_data can hold the data alone and the
    # shipped teacher travels in the tree.
    TEACHER_SET+=(--set init_weights=defvos_core/assets/teacher.pt)
    STUDENT_SET+=(--set init_weights=defvos_core/assets/student.pt)
fi
[ -n "${STUDENT_INIT:-}" ] && STUDENT_SET+=(--set "init_weights=$STUDENT_INIT")
BASELINE="${BASELINE:-0}"
MODELS="$STAGES"
[ "$BASELINE" = 1 ] && MODELS+=" baseline"

if [ "$STAGES" != student ]; then
    echo "== teacher ($TEACHER_CONFIG, data $DATA) $(date +%T)" | tee -a "$OUT/train.log"
    "${LAUNCH[@]}" --config "$TEACHER_CONFIG" --resume "${COMMON[@]}" \
        ${TEACHER_SET[@]+"${TEACHER_SET[@]}"} --set "data.root=$DATA" \
        --set "run_dir=$RUNS/teacher" --set "export.weights=$OUT/teacher.pt" \
        ${EXTRA_TEACHER:-} 2>&1 | tee -a "$OUT/train.log"
fi

# train_student NAME [OPTIONS...]: the student config from STUDENT_INIT into $RUNS/NAME,
# exported to $OUT/NAME.pt.
train_student() {
    local name="$1"
    shift
    # shellcheck disable=SC2086  # EXTRA_STUDENT holds words
    "${LAUNCH[@]}" --config "$STUDENT_CONFIG" --resume "${COMMON[@]}" \
        ${STUDENT_SET[@]+"${STUDENT_SET[@]}"} --set "data.root=$DATA" \
        --set "run_dir=$RUNS/$name" --set "distill.teacher_weights=$TEACHER" \
        --set "export.weights=$OUT/$name.pt" "$@" ${EXTRA_STUDENT:-}
}

echo "== student ($STUDENT_CONFIG, teacher $TEACHER) $(date +%T)" | tee -a "$OUT/train.log"
if [ "$BASELINE" = 1 ]; then
    echo "== baseline: the same student without a teacher, side by side" | tee -a "$OUT/train.log"
    mkdir -p "$RUNS"
    train_student baseline --stage teacher --set model_preset=student \
        > "$RUNS/baseline.log" 2>&1 & baseline_pid=$!
fi
train_student student 2>&1 | tee -a "$OUT/train.log"
if [ "$BASELINE" = 1 ]; then
    baseline_status=0
    wait "$baseline_pid" || baseline_status=$?
    { echo "== baseline log (exit $baseline_status)"
      without_progress_bars "$RUNS/baseline.log"; } >> "$OUT/train.log"
    [ "$baseline_status" = 0 ] || { echo "gpu_train: the baseline student failed" >&2; exit 1; }
fi

for model in $MODELS; do
    echo "== evaluate $model $(date +%T)" | tee -a "$OUT/train.log"
    "$PYTHON" -m defvos_core.evaluate --weights "$OUT/$model.pt" --data "$DATA" --split val \
        "${EVAL[@]}" --json "$OUT/${model}_eval.json" 2>&1 | tee -a "$OUT/train.log"
    [ "$BASELINE" = 1 ] || cp "$RUNS/$model/metrics.jsonl" "$OUT/${model}_metrics.jsonl"
done
if [ "${BENCH:-0}" = "1" ]; then
    echo "== bench $(date +%T)" | tee -a "$OUT/train.log"
    { nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
      for precision in --fp16 ""; do
          "$PYTHON" -m defvos_core.bench --weights "$OUT/student.pt" --device "${DEVICE:-cuda}" $precision \
              ${BENCH_ARGS:---sizes 240,480 --objects 1,5,10 --frames 100 --long 200} \
              || echo "bench $precision failed"
      done; } 2>&1 | tee "$OUT/bench.txt"
fi
echo "== done $(date +%T)" | tee -a "$OUT/train.log"
