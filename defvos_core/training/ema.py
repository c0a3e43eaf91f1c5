"""Exponential moving average of a model's weights (used for validation and export)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """ema = decay_t * ema + (1 - decay_t) * weights, decay_t = min(decay, (1+n)/(10+n)).

    The warm-up of decay_t (n = updates so far) keeps early averages from being dominated
    by the random initialisation. Buffers (BatchNorm statistics) are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        averaged, sources = [], []
        for name, value in self.model.state_dict().items():
            source = current[name].detach()
            if value.is_floating_point():
                averaged.append(value)
                sources.append(source.to(value.dtype))
            else:
                value.copy_(source)
        if averaged:  # one fused update instead of a kernel per tensor (GPU launch overhead)
            torch._foreach_lerp_(averaged, sources, 1.0 - decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["model"])
