"""Learning-rate schedules: linear warm-up, then poly, cosine or constant decay."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from defvos_core.training.config import OptimConfig


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str = "poly",
              poly_power: float = 0.9, min_lr_ratio: float = 0.0,
              time_fraction: float = 0.0) -> float:
    """Multiplier of the peak learning rate at `step` (0-based) of `total_steps`.

    Warm-up rises linearly from 1/(warmup+1) to 1 over `warmup_steps`; then `poly`
    (1 - progress)^power, `cosine` (1 + cos(pi progress)) / 2 or `constant`, mapped to
    [min_lr_ratio, 1]. Progress is the larger of the steps done after the warm-up and
    `time_fraction` (the part of a time budget spent), so a run cut short by its time limit
    still ends its decay.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span, time_fraction))
    if schedule == "poly":
        decay = (1.0 - progress) ** poly_power
    elif schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}: expected poly, cosine or constant")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int,
                    time_fraction: Callable[[], float] | None = None,
                    start_step: int = 0) -> LambdaLR:
    """Build a LambdaLR stepping once per optimizer step (its state_dict goes in checkpoints).

    `time_fraction()` (optional) returns the part of the run's time budget spent so far.
    `start_step` > 0: a restart from weights at that step of the schedule (fresh optimiser):
    the schedule's factor at `start_step + step`, times a new linear warm-up over
    `warmup_steps`.
    """
    def factor(step: int) -> float:
        value = lr_factor(start_step + step, total_steps, config.warmup_steps, config.schedule,
                          config.poly_power, config.min_lr_ratio,
                          time_fraction() if time_fraction is not None else 0.0)
        if start_step > 0 and step < config.warmup_steps:
            value *= (step + 1) / (config.warmup_steps + 1)
        return value

    return LambdaLR(optimizer, factor)
