# Sourced by scripts/gpu_train.sh and scripts/ablation.sh (REPO set, cwd = REPO): the
# environment of a training run on the device machine or here. Unbuffered logs, passive
# OpenMP waits, the fp16 ImageNet backbones of .device_data/pylib on PYTHONPATH when
# carried, and DATA defaulting to the carried copy, else ../shared/data.
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if [ -d .device_data/pylib ]; then
    export PYTHONPATH="$REPO/.device_data/pylib${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${DATA:-}" ]; then
    DATA=.device_data/davis2016-train-240p
    [ -d "$DATA" ] || DATA="$REPO/../shared/data/davis2016-train-240p"
fi
# without_progress_bars FILE: the log without tqdm's progress-bar lines (for summaries).
without_progress_bars() {
    grep -Ev 's/it\]|it/s\]' "$1" || true
}
