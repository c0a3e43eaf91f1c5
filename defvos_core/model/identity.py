"""Identity bank: learnable ID embeddings assigned to objects through their masks."""

from __future__ import annotations

import torch
from torch import nn


class IdentityBank(nn.Module):
    """Embeds a soft mask over `num_slots` channels (background + ID slots) as stride-16 tokens.

    Each slot owns a learnable 4x4 patch embedding applied to the stride-4 mask (a stride-4
    conv), so an object's pixels carry its slot's embedding into the memory.
    """

    def __init__(self, num_slots: int, dim: int) -> None:
        super().__init__()
        self.num_slots = num_slots
        self.embed = nn.Conv2d(num_slots, dim, kernel_size=4, stride=4)
        self.norm = nn.LayerNorm(dim)
        nn.init.orthogonal_(self.embed.weight.view(dim, -1))

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """Mask probabilities at stride 4 (B, S+1, H/4, W/4) -> ID tokens (B, N, C)."""
        tokens = self.embed(mask).flatten(2).transpose(1, 2)
        return self.norm(tokens)
