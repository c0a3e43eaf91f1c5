"""Gated Propagation Module (DeAOT-style, dual branch) with deformable long-term attention.

Each layer updates two token streams of the current frame:
- the visual branch `x_vis` (B, N, C): matches the current frame against the memory;
- the ID branch `x_id` (Bi, N, C): carries object identities along the visual branch's
  attention maps (decoupled as in DeAOT: ID never changes the visual matching).
Bi is B in training; in inference B = 1 and Bi = the number of identity banks.

Per layer: deformable long-term attention over the memory frames + local short-term attention
over the previous frame (summed, then gated by SiLU(U x_vis)), gated self-attention within the
current frame, and a feed-forward block per branch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from defvos_core.model.attention import (
    DeformableSampler,
    apply_local_weights,
    apply_weights,
    attention_weights,
    local_attention_weights,
    local_window_mask,
    map_tokens,
    use_dense_local,
)


class MemoryTensors(NamedTuple):
    """Memory entries fed to propagation (per layer l, frame t).

    long_key / long_value: (B or 1, T, L, C, h, w) visual keys and values of the memory frames;
    long_id: (Bi, T, L, C, h, w) their identity values; short_*: the same for the previous
    frame with T = 1.
    """

    long_key: torch.Tensor
    long_value: torch.Tensor
    long_id: torch.Tensor
    short_key: torch.Tensor
    short_value: torch.Tensor
    short_id: torch.Tensor


class PropagationOutput(NamedTuple):
    visual: torch.Tensor  # (B, N, C)
    identity: torch.Tensor  # (Bi, N, C)
    attention_maps: list[torch.Tensor]  # per layer: long-term weights (B, H, N, T*G)


class FeedForward(nn.Module):
    def __init__(self, dim: int, expand: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * expand), nn.GELU(),
                                 nn.Linear(dim * expand, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.net(tokens)


class GatedPropagationLayer(nn.Module):
    """One dual-branch gated propagation layer."""

    def __init__(self, dim: int, heads: int, sample_grid: tuple[int, int], offset_range: float,
                 short_term_radius: int, ffn_expand: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {heads}")
        self.heads = heads
        self.radius = short_term_radius
        self.norm_visual = nn.LayerNorm(dim)
        self.norm_identity = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.sampler = DeformableSampler(dim, sample_grid, offset_range)
        self.gate_visual = nn.Linear(dim, dim)
        self.gate_identity = nn.Linear(dim, dim)
        self.out_visual = nn.Linear(dim, dim)
        self.out_identity = nn.Linear(dim, dim)
        self.norm_self = nn.LayerNorm(dim)
        self.self_qkv = nn.Linear(dim, 3 * dim)
        self.self_id_value = nn.Linear(dim, dim)
        self.self_out_visual = nn.Linear(dim, dim)
        self.self_out_identity = nn.Linear(dim, dim)
        self.ffn_visual = FeedForward(dim, ffn_expand)
        self.ffn_identity = FeedForward(dim, ffn_expand)

    def forward(self, x_vis: torch.Tensor, x_id: torch.Tensor, grid: tuple[int, int],
                memory: MemoryTensors,
                layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return updated (x_vis (B,N,C), x_id (Bi,N,C), long-term weights (B,H,N,T*G))."""
        height, width = grid
        batch, length, channels = x_vis.shape
        normed = self.norm_visual(x_vis)
        query = self.query(normed)  # (B, N, C)
        query_map = query.transpose(1, 2).reshape(batch, channels, height, width)

        # Long-term: deformable attention over the memory frames.
        points = self.sampler.sample_points(query_map)  # (B, Gh, Gw, 2)
        keys = self.sampler.sample(memory.long_key[:, :, layer], points)  # (B, T*G, C)
        values = self.sampler.sample(memory.long_value[:, :, layer], points)
        id_values = self.sampler.sample(memory.long_id[:, :, layer], points)  # (Bi, T*G, C)
        long_weights = attention_weights(query, keys, self.heads)  # (B, H, N, T*G)
        visual = apply_weights(long_weights, values)
        identity = apply_weights(long_weights, id_values)

        # Short-term: local attention around each position in the previous frame.
        short_key = memory.short_key[:, 0, layer]  # (B, C, h, w)
        short_value, short_id = memory.short_value[:, 0, layer], memory.short_id[:, 0, layer]
        if use_dense_local(short_key):  # the same weights, as one masked N x N product
            window = local_window_mask(height, width, self.radius, short_key.device)
            short_weights = attention_weights(query, map_tokens(short_key), self.heads, window)
            visual = visual + apply_weights(short_weights, map_tokens(short_value))
            identity = identity + apply_weights(short_weights, map_tokens(short_id))
        else:
            short_weights = local_attention_weights(query, short_key, self.heads, self.radius)
            visual = visual + apply_local_weights(short_weights, short_value, self.radius)
            identity = identity + apply_local_weights(short_weights, short_id, self.radius)

        x_vis = x_vis + self.out_visual(visual * F.silu(self.gate_visual(normed)))
        x_id = x_id + self.out_identity(identity * F.silu(self.gate_identity(normed)))

        # Self-attention within the current frame; the ID branch follows the visual weights.
        normed_self = self.norm_self(x_vis)
        self_query, self_key, self_value = self.self_qkv(normed_self).chunk(3, dim=-1)
        self_weights = attention_weights(self_query, self_key, self.heads)
        x_vis = x_vis + self.self_out_visual(apply_weights(self_weights, self_value))
        id_value = self.self_id_value(self.norm_identity(x_id))
        x_id = x_id + self.self_out_identity(apply_weights(self_weights, id_value))
        return self.ffn_visual(x_vis), self.ffn_identity(x_id), long_weights


class GatedPropagationModule(nn.Module):
    """A stack of gated propagation layers plus the per-layer memory projections."""

    def __init__(self, dim: int, num_layers: int, heads: int, sample_grid: tuple[int, int],
                 offset_range: float, short_term_radius: int, ffn_expand: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            GatedPropagationLayer(dim, heads, sample_grid, offset_range, short_term_radius,
                                  ffn_expand) for _ in range(num_layers))
        self.memory_norm = nn.LayerNorm(dim)
        self.memory_key = nn.Linear(dim, num_layers * dim)
        self.memory_value = nn.Linear(dim, num_layers * dim)
        self.memory_identity = nn.Linear(dim, num_layers * dim)

    @staticmethod
    def _per_layer(tokens: torch.Tensor, grid: tuple[int, int], layers: int) -> torch.Tensor:
        """(B, N, L*C) -> (B, L, C, h, w)."""
        batch, length, _ = tokens.shape
        return tokens.transpose(1, 2).reshape(batch, layers, -1, grid[0], grid[1])

    def memory_entries(self, tokens: torch.Tensor,
                       grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual memory entries of a frame: keys and values, each (B, L, C, h, w)."""
        normed = self.memory_norm(tokens)
        return (self._per_layer(self.memory_key(normed), grid, self.num_layers),
                self._per_layer(self.memory_value(normed), grid, self.num_layers))

    def identity_entries(self, id_tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Identity memory entries (Bi, L, C, h, w) from ID embeddings (Bi, N, C)."""
        return self._per_layer(self.memory_identity(id_tokens), grid, self.num_layers)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], memory: MemoryTensors,
                identity_batch: int) -> PropagationOutput:
        """Propagate memory into the current frame's tokens (B, N, C)."""
        x_vis = tokens
        x_id = tokens.new_zeros(identity_batch, tokens.shape[1], tokens.shape[2])
        maps = []
        for index, layer in enumerate(self.layers):
            x_vis, x_id, weights = layer(x_vis, x_id, grid, memory, index)
            maps.append(weights)
        return PropagationOutput(x_vis, x_id, maps)
