"""Typed training configuration: a YAML file + `key.sub=value` overrides, no global state.

    config = load_train_config("config/training/teacher.yaml", ["optim.lr=1e-4"], stage=None)

The model section starts from the preset of the stage (`teacher_config()` for the teacher
and static stages, `student_config()` for the student stage; `model_preset` picks one
explicitly), then the YAML's `model:` keys and the overrides are applied on top.
Stages: `static` (supervised, on synthetic clips from still images: `data.static`),
`teacher` (supervised, on DAVIS clips) and `student` (distilled from a frozen teacher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from defvos_core.config import ModelConfig, TrackerConfig, student_config, teacher_config
from defvos_core.config_io import load_config, merge, parse_overrides
from defvos_core.data.clip_dataset import WORKER_START_METHODS, ClipSamplingConfig
from defvos_core.data.splits import HOLDOUT_SEQUENCES
from defvos_core.data.static_clips import StaticClipConfig
from defvos_core.model.encoder import TRUNK_STAGES as ENCODER_STAGES

STAGES = ("teacher", "student", "static")
PRESETS = {"teacher": teacher_config, "student": student_config}
STAGE_PRESETS = {"teacher": "teacher", "student": "student", "static": "teacher"}


def _default_clip() -> ClipSamplingConfig:
    return ClipSamplingConfig(num_frames=3, max_gap=6, crop_size=(240, 240))


@dataclass
class DataConfig:
    """Where clips come from. Held-out and validation sequences are never trained on.

    A fold run: `data.split=train-fold2 validation.split=fold2 data.holdout=[]` trains on
    the 24 sequences outside fold 2 and validates on its 6 (`defvos_core.data.folds`).
    """

    root: str = ""  # DAVIS-layout folder; "" = $DEFVOS_DATA/davis2016-train-240p (roots.py)
    resolution: str = "240p"
    # ImageSets/<split>.txt of `root` when that file exists, else any `resolve_split` name
    # (train-fold0..4, fold0..4, a list file)
    split: str = "train"
    holdout: list[str] = field(default_factory=lambda: list(HOLDOUT_SEQUENCES))
    sequences: list[str] = field(default_factory=list)  # restrict training to these; [] = all
    # Extra unlabeled footage (student stage): "frames_dir_or_video::first_frame_mask.png".
    # An entry without a first-frame mask cannot seed semi-supervised VOS and is skipped.
    unlabeled: list[str] = field(default_factory=list)
    clip: ClipSamplingConfig = field(default_factory=_default_clip)
    # Synthetic clips from still images (+ objects of the training sequences): the static
    # stage's only data; in the other stages a `synthetic_fraction` of the clips, labelled
    # in the teacher stage, unlabelled (the teacher's outputs are the target) in the student.
    static: StaticClipConfig = field(default_factory=StaticClipConfig)
    synthetic_fraction: float = 0.0
    # clips per epoch; 0 = 20 per training sequence (static stage: one per still image)
    samples_per_epoch: int = 0
    num_workers: int = 1
    # How loader workers start: "fork", "forkserver", "spawn", or "auto" (forkserver when
    # CUDA is available: no fork of a process holding a CUDA context; fork on CPU).
    worker_start: str = "auto"


@dataclass
class OptimConfig:
    """AdamW with a lower learning rate for the (pretrained) encoder; DeAOT defaults."""

    lr: float = 2e-4
    encoder_lr_scale: float = 0.1
    weight_decay: float = 0.07  # not applied to biases and norm parameters
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 5.0  # max global gradient norm; 0 disables
    schedule: str = "poly"  # poly | cosine | constant (after the linear warm-up)
    warmup_steps: int = 100
    poly_power: float = 0.9
    min_lr_ratio: float = 0.0  # final lr as a fraction of the peak
    # With time_limit_minutes > 0: the decay also follows the time spent (whichever of steps
    # and time is further along), so a run stopped by its time limit ends at the final lr.
    time_schedule: bool = False


@dataclass
class SupervisedConfig:
    """Bootstrapped cross-entropy + soft Jaccard (teacher stage, student's optional term)."""

    top_k_fraction: float = 0.15  # hardest pixels kept by the bootstrapped CE
    mining_steps: int = 0  # steps over which CE goes from plain to bootstrapped; 0 = none


@dataclass
class DistillConfig:
    """Student stage: L = att * sum_l (1 - CKA) + intra * L_intra + inter * L_inter (+ sup)."""

    teacher_weights: str = ""  # weights file of the frozen teacher; "" = assets/teacher.pt
    attention: float = 1.0
    intra: float = 1.0
    inter: float = 1.0
    supervised: float = 0.0  # only where ground truth is allowed (not self-supervised)
    temperature: float = 1.0
    # The student never sees ground truth after a video's first frame: every training
    # sequence is re-labelled by the teacher from its first annotated frame (pseudo-labels,
    # cached under <run_dir>/pseudo_labels), clips take their first-frame mask from those,
    # and the supervised term is off.
    self_supervised: bool = False


@dataclass
class ValidationConfig:
    """Held-out J&F via the tracker (segment_frames), on rank 0."""

    enabled: bool = True
    every: int = 0  # steps between validations; 0 = only at the end
    sequences: list[str] = field(default_factory=lambda: list(HOLDOUT_SEQUENCES))
    split: str = ""  # a `resolve_split` name (e.g. fold2) replacing `sequences`; "" = none
    size: int | None = TrackerConfig.size  # tracker processing size (short side)
    max_frames: int = 0  # frames per sequence; 0 = all


@dataclass
class ExportConfig:
    """The weights-only fp16 file written at the end."""

    weights: str = ""  # "" = <run_dir>/<stage>.pt
    use_ema: bool = True  # export the EMA weights when EMA is on
    half: bool = True


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    stage: str = "teacher"  # static | teacher | student
    model_preset: str = ""  # teacher | student; "" = the stage's preset (static: teacher)
    model: ModelConfig = field(default_factory=teacher_config)
    init_weights: str = ""  # start the model from a weights file (same architecture)
    # With init_weights: continue a run's schedule from this step with a fresh optimiser (a
    # new warm-up of optim.warmup_steps), e.g. from committed fp16 weights on a new machine.
    restart_step: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: SupervisedConfig = field(default_factory=SupervisedConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    steps: int = 1000
    batch_size: int = 4  # per process
    seed: int = 0
    device: str = "auto"  # auto (cuda:LOCAL_RANK if available) | cpu | cuda
    amp: str = "auto"  # auto (fp16 on CUDA, off on CPU) | none | fp16 | bf16
    ema_decay: float = 0.0  # 0 disables the exponential moving average
    freeze_bn: bool = True  # recommended for per-process batches <= 4
    # Keep what ImageNet taught the encoder: 0 = train it all (at optim.encoder_lr_scale);
    # N >= 1 freezes the stem and the first N MBConv stages (weights and BatchNorm
    # statistics): 2 = everything up to the stride-4 features, 5 = the whole trunk.
    freeze_encoder_stages: int = 0
    detach_memory_masks: bool = True  # no gradient through predicted masks kept as memory
    threads: int = 0  # torch CPU threads per process; 0 = torch default
    run_dir: str = "runs/default"
    checkpoint_every: int = 100
    # Every N steps also export the weights (fp16, with provenance) to
    # <run_dir>/snapshots/step_<N>.pt, for choosing a checkpoint on held-out data; 0 = never.
    snapshot_every: int = 0
    log_every: int = 10
    # Stop early (checkpoint, validate, export) once this much training time has passed,
    # summed over resumed runs; the lr schedule follows it if optim.time_schedule. 0 = none.
    time_limit_minutes: float = 0.0

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent setting."""
        if self.stage not in STAGES:
            raise ValueError(f"stage: expected one of {STAGES}, got {self.stage!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, "
                             f"{self.batch_size}")
        if self.amp not in ("auto", "none", "fp16", "bf16"):
            raise ValueError(f"amp: expected auto|none|fp16|bf16, got {self.amp!r}")
        if self.optim.schedule not in ("poly", "cosine", "constant"):
            raise ValueError(f"optim.schedule: expected poly|cosine|constant, got "
                             f"{self.optim.schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.data.clip.num_frames < 2:
            raise ValueError("data.clip.num_frames must be >= 2 (frame 0 is the reference)")
        if any(side % 16 for side in self.data.clip.crop_size):
            raise ValueError(f"data.clip.crop_size {tuple(self.data.clip.crop_size)}: both "
                             f"sides must be multiples of 16 (the model stride)")
        if not 0.0 <= self.data.synthetic_fraction <= 1.0:
            raise ValueError(f"data.synthetic_fraction must be in [0, 1], got "
                             f"{self.data.synthetic_fraction}")
        if self.data.worker_start not in WORKER_START_METHODS:
            raise ValueError(f"data.worker_start: expected one of {WORKER_START_METHODS}, "
                             f"got {self.data.worker_start!r}")
        if not 0 <= self.freeze_encoder_stages <= ENCODER_STAGES:
            raise ValueError(f"freeze_encoder_stages must be in 0..{ENCODER_STAGES}, got "
                             f"{self.freeze_encoder_stages}")
        if self.restart_step and not (self.init_weights and 0 < self.restart_step < self.steps):
            raise ValueError(f"restart_step {self.restart_step} needs init_weights and must be "
                             f"below steps ({self.steps})")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.snapshot_every < 0:
            raise ValueError("checkpoint_every and log_every must be >= 1, snapshot_every >= 0")


def load_train_config(yaml_path: str | Path | None = None, overrides: list[str] | None = None,
                      stage: str | None = None) -> TrainConfig:
    """Defaults (with the stage's model preset) <- YAML <- overrides <- `stage` (if given)."""
    raw: dict[str, Any] = {}
    if yaml_path is not None:
        try:
            raw = yaml.safe_load(Path(yaml_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"{yaml_path}: cannot read config ({error})") from error
        if not isinstance(raw, dict):
            raise ValueError(f"{yaml_path}: expected a mapping at the top level")
    overrides = list(overrides or [])
    if stage is not None:
        overrides.append(f"stage={stage}")
    raw = merge(raw, parse_overrides(overrides))
    chosen_stage = str(raw.get("stage", "teacher"))
    preset = str(raw.get("model_preset") or STAGE_PRESETS.get(chosen_stage, chosen_stage))
    if preset not in PRESETS:
        raise ValueError(f"model_preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    defaults = TrainConfig(stage=chosen_stage, model=PRESETS[preset]())
    config = load_config(TrainConfig, yaml_path, overrides, defaults=defaults)
    config.validate()
    return config
