"""Attention primitives of the gated propagation module.

- `DeformableSampler`: re-samples memory key/value maps at a learned, query-dependent set of
  points (uniform reference grid + bounded offsets), so each memory frame contributes a fixed
  number of keys whatever the image size (the paper's deformable attention).
- `local_window`: gathers the (2r+1)^2 neighbourhood of every position of the previous frame
  for short-term local attention.
- `attend`: multi-head scaled dot-product attention that returns its weights.
- `local_window_mask` + `use_dense_local`: the same local attention as masked dense
  attention (three matrix products), the fast way on a CPU for small maps in inference.

Notation: B batch, T memory frames, C channels, h x w the stride-16 grid, N = h*w queries,
G = sampled keys per memory frame, H heads.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


def reference_grid(rows: int, cols: int, device=None, dtype=None) -> torch.Tensor:
    """Uniform reference points at cell centres in [-1, 1]: (rows, cols, 2) as (x, y)."""
    ys = (torch.arange(rows, device=device, dtype=dtype) + 0.5) * (2.0 / rows) - 1.0
    xs = (torch.arange(cols, device=device, dtype=dtype) + 0.5) * (2.0 / cols) - 1.0
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1)


class DeformableSampler(nn.Module):
    """Offset network + bilinear re-sampling of memory maps at the shifted reference points.

    The offsets are predicted from the query (current frame) features by a depthwise conv,
    GELU and a 1x1 conv, bounded by tanh * `offset_range` reference-grid cells.
    """

    def __init__(self, dim: int, sample_grid: tuple[int, int], offset_range: float) -> None:
        super().__init__()
        self.sample_grid = (int(sample_grid[0]), int(sample_grid[1]))
        self.offset_range = float(offset_range)
        self.offset_net = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, 2, kernel_size=1),
        )
        # Start at the reference grid: offsets are learned from zero.
        nn.init.zeros_(self.offset_net[-1].weight)
        nn.init.zeros_(self.offset_net[-1].bias)

    def sample_points(self, query_map: torch.Tensor) -> torch.Tensor:
        """Predict sampling positions (B, Gh, Gw, 2) in [-1, 1] from queries (B, C, h, w)."""
        rows, cols = self.sample_grid
        batch = query_map.shape[0]
        offsets = torch.tanh(self.offset_net(query_map)) * self.offset_range  # (B, 2, h, w) cells
        reference = reference_grid(rows, cols, query_map.device, query_map.dtype)
        reference = reference.unsqueeze(0).expand(batch, rows, cols, 2)
        # Offsets at the reference points, converted from grid cells to normalised units.
        offsets = F.grid_sample(offsets, reference, mode="bilinear", align_corners=False)
        # x by 2/cols, y by 2/rows; scalars, not a host tensor: capturable in a CUDA graph
        shift = torch.stack((offsets[:, 0] * (2.0 / cols), offsets[:, 1] * (2.0 / rows)), dim=-1)
        return reference + shift  # (B, Gh, Gw, 2)

    @staticmethod
    def sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Bilinearly sample memory maps (B, T, C, h, w) at points (Bp, Gh, Gw, 2) -> (B, T*G, C).

        `Bp` is B, or 1 when all batch items share the points (the identity banks of one frame).
        """
        batch, frames, channels, height, width = maps.shape
        points = points.expand(batch, *points.shape[1:])
        grid = points.unsqueeze(1).expand(batch, frames, *points.shape[1:])
        grid = grid.reshape(batch * frames, *points.shape[1:])
        maps = maps.reshape(batch * frames, channels, height, width)
        if maps.dtype == torch.bfloat16 and not maps.is_cuda:  # CPU bf16 kernel: 3x slower
            sampled = F.grid_sample(maps.float(), grid.float(), mode="bilinear",
                                    padding_mode="border", align_corners=False).to(maps.dtype)
        else:
            sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border",
                                    align_corners=False)
        sampled = sampled.reshape(batch, frames, channels, -1)  # (B, T, C, G)
        return sampled.permute(0, 1, 3, 2).reshape(batch, -1, channels)  # (B, T*G, C)


def split_heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, H, N, C/H)."""
    batch, length, channels = tokens.shape
    return tokens.reshape(batch, length, heads, channels // heads).transpose(1, 2)


def merge_heads(tokens: torch.Tensor) -> torch.Tensor:
    """(B, H, N, C/H) -> (B, N, C)."""
    batch, heads, length, head_dim = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, length, heads * head_dim)


def attention_weights(query: torch.Tensor, key: torch.Tensor, heads: int,
                      allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention weights (B, H, N, K) of query (B, N, C) over key (B, K, C).

    allowed: optional (N, K) bool; False pairs get zero weight.
    """
    head_dim = query.shape[-1] // heads
    logits = split_heads(query, heads) @ split_heads(key, heads).transpose(-1, -2)
    logits = logits / math.sqrt(head_dim)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=-1)


def apply_weights(weights: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Weights (Bw, H, N, K) applied to values (B, K, C) -> (B, N, C); Bw is B or 1."""
    heads = weights.shape[1]
    return merge_heads(weights @ split_heads(value, heads))


def local_window(maps: torch.Tensor, radius: int) -> torch.Tensor:
    """Neighbourhoods of every position: maps (B, C, h, w) -> (B, C, (2r+1)^2, h*w), zero padded."""
    batch, channels = maps.shape[:2]
    size = 2 * radius + 1
    windows = F.unfold(maps, kernel_size=size, padding=radius)  # (B, C*size*size, N)
    return windows.reshape(batch, channels, size * size, -1)


DENSE_LOCAL_MAX_TOKENS = 1024  # CPU: 3.5x faster at 240p (405 tokens), even at ~1300


def use_dense_local(key_map: torch.Tensor) -> bool:
    """Whether to run short-term local attention as masked dense attention.

    Dense: three matrix products over all N x N pairs, the window as a mask: the same weights
    (masked pairs get exactly zero), several times faster than the (2r+1)^2 small products on
    a CPU while N is small. Inference only (training and ONNX exports keep the windowed ops).
    """
    return (not key_map.is_cuda and not torch.is_grad_enabled()
            and key_map.shape[-2] * key_map.shape[-1] <= DENSE_LOCAL_MAX_TOKENS
            and not torch.onnx.is_in_onnx_export())


@functools.lru_cache(maxsize=8)
def local_window_mask(height: int, width: int, radius: int,
                      device: torch.device) -> torch.Tensor:
    """(N, N) bool over an h x w grid: key within `radius` rows and columns of the query."""
    with torch.inference_mode(False):  # a normal tensor: usable in and out of inference mode
        rows = torch.arange(height, device=device).repeat_interleave(width)
        cols = torch.arange(width, device=device).repeat(height)
        return (((rows[:, None] - rows[None]).abs() <= radius)
                & ((cols[:, None] - cols[None]).abs() <= radius))


def map_tokens(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C)."""
    return maps.flatten(2).transpose(1, 2)


def shifted_views(maps: torch.Tensor, radius: int) -> list[torch.Tensor]:
    """Return the (2r+1)^2 zero-padded shifts of maps (B, C, h, w), window positions in row order.

    View k holds, at each position, its neighbour at offset (k // (2r+1) - r, k % (2r+1) - r):
    the same neighbourhoods as `local_window` without materialising them all at once.
    """
    height, width = maps.shape[-2:]
    size = 2 * radius + 1
    padded = F.pad(maps, (radius, radius, radius, radius))
    return [padded[..., dy:dy + height, dx:dx + width]
            for dy in range(size) for dx in range(size)]


def local_attention_weights(query: torch.Tensor, key_map: torch.Tensor, heads: int,
                            radius: int, windowed: bool | None = None) -> torch.Tensor:
    """Short-term local attention weights (B, H, N, W) with W = (2r+1)^2 window positions.

    query (B, N, C) from the current frame, key_map (B, C, h, w) from the previous frame.
    Window positions outside the image are masked out. `windowed` materialises all
    neighbourhoods at once (`local_window`: a few large kernels, the fast way on a GPU);
    otherwise one small product per window position (`shifted_views`: less memory, faster on
    a CPU). None picks by the device. Both compute the same weights.
    """
    batch, length, channels = query.shape
    height, width = key_map.shape[-2:]
    head_dim = channels // heads
    if windowed is None:
        windowed = key_map.is_cuda
    if windowed:
        queries = query.transpose(1, 2).reshape(batch, heads, head_dim, 1, length)
        keys = local_window(key_map, radius).reshape(-1, heads, head_dim, (2 * radius + 1) ** 2,
                                                     length)
        logits = (queries * keys).sum(2)  # (B, H, W, N)
    else:
        queries = query.transpose(1, 2).reshape(batch, heads, head_dim, height, width)
        logits = torch.stack([(queries * keys.reshape(-1, heads, head_dim, height, width)).sum(2)
                              for keys in shifted_views(key_map, radius)], dim=2)  # (B,H,W,h,w)
    logits = logits.reshape(batch, heads, -1, length) / math.sqrt(head_dim)
    inside = local_window(torch.ones(1, 1, height, width, device=query.device,
                                     dtype=query.dtype), radius).reshape(1, 1, -1, length)
    logits = logits.masked_fill(inside < 0.5, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=2).transpose(2, 3)  # (B, H, N, W)


def apply_local_weights(weights: torch.Tensor, value_map: torch.Tensor,
                        radius: int, windowed: bool | None = None) -> torch.Tensor:
    """Apply local weights (Bw, H, N, W) to the last frame's values (B, C, h, w) -> (B, N, C).

    `windowed` as in `local_attention_weights`.
    """
    channels, height, width = value_map.shape[1:]
    heads, length = weights.shape[1], weights.shape[2]
    head_dim = channels // heads
    if windowed is None:
        windowed = value_map.is_cuda
    if windowed:
        values = local_window(value_map, radius).reshape(-1, heads, head_dim,
                                                         (2 * radius + 1) ** 2, length)
        out = (weights.transpose(2, 3)[:, :, None] * values).sum(3)  # (B, H, C/H, N)
    else:
        per_position = weights.transpose(2, 3).reshape(weights.shape[0], heads, 1, -1, height,
                                                       width)
        out = None
        for index, values in enumerate(shifted_views(value_map, radius)):
            term = per_position[:, :, :, index] * values.reshape(-1, heads, head_dim, height,
                                                                 width)
            out = term if out is None else out + term
    batch = out.shape[0]
    return out.reshape(batch, channels, length).transpose(1, 2)
