"""Train the prompt head on a frozen student, then write it into a copy of the student's file.

The student is unchanged: its encoder features are cached once (`prompt_data`), and only the
head (`defvos_core.model.prompt_head`) learns, from jittered boxes and clicks drawn from
ground-truth masks of ECSSD's 800 training images and DAVIS frames, and of two-object
composites of them (`prompt_data.compose_pair`). Loss: BCE + soft Dice on the logits
upsampled to the crop. The written file's `meta["prompt_head"]` says what the
head was trained on, how long, from which parent (sha256) and with which command.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from defvos_core.config import TrackerConfig
from defvos_core.config_io import to_dict
from defvos_core.data.ecssd import read_static_images
from defvos_core.data.folds import NUM_FOLDS, fold_split
from defvos_core.data.roots import default_davis_root, default_ecssd_root
from defvos_core.data.sequences import read_davis
from defvos_core.data.splits import HOLDOUT_SEQUENCES
from defvos_core.model.checkpoint import resolve_weights
from defvos_core.model.prompt_head import PromptHead
from defvos_core.model.prompt_weights import add_prompt_head, load_student, new_prompt_head
from defvos_core.training.prompt_data import cached_features, ecssd_split, sample_batch

LOGGER = logging.getLogger("defvos")


@dataclass
class PromptTrainConfig:
    """One prompt-head training run."""

    weights: str = ""  # the student the head is added to; "" = the shipped student
    out: str = ""  # weights file to write (the student + the head)
    davis_root: str = ""  # "" = roots.default_davis_root()
    ecssd_root: str = ""  # "" = roots.default_ecssd_root()
    fold: int = -1  # DAVIS frames: -1 = the shipped tracker's 25 training sequences,
    #                 k = the 24 sequences outside fold k (`defvos_core.data.folds`)
    davis_frame_step: int = 2  # every n-th annotated DAVIS frame
    ecssd_images: int = 0  # the first n of ECSSD's 800 training images; 0 = all
    composites: bool = True  # also each image with another one's object pasted over it
    size: int = TrackerConfig.size  # processing short side: the tracker's
    crop: int = 192  # training crops, pixels (multiple of 16, at most `size`)
    steps: int = 3000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    box_fraction: float = 0.5  # share of box prompts (the rest: clicks)
    seed: int = 0
    threads: int = 2  # torch CPU threads
    cache_dir: str = ""  # feature cache; "" = $DEFVOS_CACHE_DIR or ~/.cache/defvos

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not self.out:
            raise ValueError("out: the weights file to write is required")
        if not -1 <= self.fold < NUM_FOLDS:
            raise ValueError(f"fold must be -1 or 0..{NUM_FOLDS - 1}, got {self.fold}")
        if self.crop % 16 or not 16 <= self.crop <= self.size:
            raise ValueError(f"crop {self.crop} must be a multiple of 16 and <= size {self.size}")
        if min(self.steps, self.batch_size, self.davis_frame_step) < 1 or self.ecssd_images < 0:
            raise ValueError("steps, batch_size, davis_frame_step >= 1 and ecssd_images >= 0")


def davis_names(fold: int, all_names: list[str]) -> list[str]:
    """Return the DAVIS sequences a head trains on (see `PromptTrainConfig.fold`)."""
    if fold < 0:
        return [name for name in all_names if name not in HOLDOUT_SEQUENCES]
    return fold_split(fold)[0]


def prompt_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice of stride-4 logits (B, 1, h/4, w/4) against masks (B, 1, h, w)."""
    logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probabilities = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    dice = 1 - (2 * (probabilities * target).sum(1) + 1) / (probabilities.sum(1)
                                                            + target.sum(1) + 1)
    return bce + dice.mean()


def _cache_dir(config: PromptTrainConfig) -> Path:
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    from defvos_core.onnx.runtime import default_cache_dir

    return default_cache_dir()


def train_prompt_head(config: PromptTrainConfig,
                      command: str = "") -> tuple[PromptHead, dict[str, Any]]:
    """Train a head on the frozen student of `config.weights`; return it and its meta."""
    config.validate()
    from defvos_core.model.checkpoint import file_sha256

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    parent = resolve_weights(config.weights or None)
    student = load_student(parent)
    davis_root = Path(config.davis_root) if config.davis_root else default_davis_root()
    ecssd_root = Path(config.ecssd_root) if config.ecssd_root else default_ecssd_root()
    ecssd_train, ecssd_heldout = ecssd_split(read_static_images(ecssd_root))
    ecssd_train = ecssd_train[:config.ecssd_images or None]
    all_names = [s.name for s in read_davis(davis_root, "train", "240p")]
    names = davis_names(config.fold, all_names)
    davis = read_davis(davis_root, "train", "240p", sequences=names)
    started = time.perf_counter()
    images = cached_features(student, file_sha256(parent), ecssd_train, davis,
                             config.davis_frame_step, config.size, config.composites,
                             _cache_dir(config))
    LOGGER.info("features of %d images ready in %.0f s", len(images),
                time.perf_counter() - started)

    head = new_prompt_head(student.config).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)

    def learning_rate(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    started = time.perf_counter()
    running = 0.0
    for step in range(config.steps):
        batch = sample_batch(images, config.batch_size, config.crop, config.box_fraction, rng)
        loss = prompt_loss(head(batch.skip4, batch.skip8, batch.tokens, batch.maps),
                           batch.target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.item()
        if (step + 1) % 100 == 0:
            LOGGER.info("step %d/%d loss %.4f (%.0f s)", step + 1, config.steps, running / 100,
                        time.perf_counter() - started)
            running = 0.0
    seconds = time.perf_counter() - started
    composites = sum("+" in image.name for image in images)  # "<base>+<donor>"
    meta = {
        "trained": True,
        "steps": config.steps,
        "config": to_dict(config),
        "data": {
            "ecssd": {"root": ecssd_root.name, "images": len(ecssd_train),
                      "heldout": [item.name for item in ecssd_heldout][:3] + ["..."],
                      "heldout_rule": "every 5th image in name order (200) is held out"},
            "davis": {"root": davis_root.name, "sequences": names,
                      "frame_step": config.davis_frame_step,
                      "frames": len(images) - composites - len(ecssd_train)},
            "composites": composites,
        },
        "train_seconds": round(seconds, 1),
        "hardware": f"{platform.machine()} CPU, {config.threads} torch threads, "
                    f"PyTorch {torch.__version__}",
        "command": command,
    }
    return head.eval(), meta


def train_and_write(config: PromptTrainConfig, command: str = "") -> Path:
    """Train a head and write `config.out` = the parent student + the head."""
    head, meta = train_prompt_head(config, command)
    out = Path(config.out)
    add_prompt_head(resolve_weights(config.weights or None), head, out, meta)
    return out
