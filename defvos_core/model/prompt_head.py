"""Prompt head: a box or clicks on the seed frame -> that object's mask logits, in the model.

The head reads the student's (frozen) encoder features of the seed frame (`FrameFeatures`:
skip4, skip8, tokens) and per-object prompt maps at stride 4:

- channel 0: the box, filled (1 inside); channel 1: the box outline (1 near an edge);
- channel 2 / 3: positive / negative clicks as Gaussian bumps (sigma `CLICK_SIGMA` pixels);
- channel 4 / 5: the same clicks as broad bumps (sigma `CLICK_REACH`): how near a click is,
  so a click on a small, plain thing is not outvoted by a salient object far away.

It returns one logit map per object at stride 4 of the padded frame. Coordinates are pixels
of the model input (the resized frame, before padding); `defvos_core.inference.prompts`
maps camera pixels to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

PROMPT_CHANNELS = 6  # filled box, box outline, clicks +/-, broad clicks +/-
CLICK_SIGMA = 8.0  # pixels of the model input (240p: 3 % of the short side)
CLICK_REACH = 120.0  # pixels of the model input (240p: half the short side)
MAP_STRIDE = 4  # prompt maps and logits are at stride 4


@dataclass
class ObjectPrompt:
    """One object's prompt in model-input pixels: a box (x0, y0, x1, y1) and/or clicks."""

    box: tuple[float, float, float, float] | None = None
    clicks: list[tuple[float, float, int]] = field(default_factory=list)  # (x, y, 1 pos / 0 neg)


def prompt_maps(prompts: list[ObjectPrompt], size: tuple[int, int]) -> torch.Tensor:
    """Rasterise prompts on the stride-4 grid of a padded input of `size` (H, W).

    Returns (N, PROMPT_CHANNELS, H/4, W/4) float32, one row per prompt.
    """
    height, width = size[0] // MAP_STRIDE, size[1] // MAP_STRIDE
    # Pixel coordinates of the centres of the stride-4 cells.
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * MAP_STRIDE
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * MAP_STRIDE
    maps = torch.zeros(len(prompts), PROMPT_CHANNELS, height, width)
    for row, prompt in enumerate(prompts):
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            inside_y = (ys >= y0) & (ys < y1)
            inside_x = (xs >= x0) & (xs < x1)
            filled = (inside_y[:, None] & inside_x[None, :]).float()
            # A thin box (narrower than a cell) still marks the cell it falls in.
            if not filled.any():
                cy = min(height - 1, max(0, int((y0 + y1) / 2 // MAP_STRIDE)))
                cx = min(width - 1, max(0, int((x0 + x1) / 2 // MAP_STRIDE)))
                filled[cy, cx] = 1
            maps[row, 0] = filled
            eroded = -F.max_pool2d(-filled[None, None], 3, stride=1, padding=1)[0, 0]
            maps[row, 1] = filled - eroded
        for x, y, label in prompt.clicks:
            distance = (ys[:, None] - y) ** 2 + (xs[None, :] - x) ** 2
            for channel, sigma in ((2, CLICK_SIGMA), (4, CLICK_REACH)):
                channel += 0 if label else 1
                bump = torch.exp(-distance / (2 * sigma ** 2))
                maps[row, channel] = torch.maximum(maps[row, channel], bump)
    return maps


def _block(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.GroupNorm(8, out_channels), nn.ReLU(inplace=True))


class PromptHead(nn.Module):
    """Encoder features + prompt maps -> per-object mask logits at stride 4."""

    def __init__(self, feature_channels: tuple[int, int, int], width: int = 64) -> None:
        """feature_channels: (C4, C8, C16) of skip4, skip8 and the projected tokens."""
        super().__init__()
        channels4, channels8, channels16 = feature_channels
        self.in16 = _block(channels16 + PROMPT_CHANNELS, width)
        # Dilated context at stride 16 so a box's extent reaches every cell inside it.
        self.context = nn.ModuleList([_block(width, width, d) for d in (1, 2, 4)])
        self.in8 = _block(channels8 + PROMPT_CHANNELS + width, width // 2)
        self.in4 = _block(channels4 + PROMPT_CHANNELS + width // 2, width // 4)
        self.out = nn.Conv2d(width // 4, 1, 1)

    def forward(self, skip4: torch.Tensor, skip8: torch.Tensor, tokens: torch.Tensor,
                maps: torch.Tensor) -> torch.Tensor:
        """Features of B frames (or of 1, shared) + maps (N, P, H/4, W/4) -> (N, 1, H/4, W/4).

        N prompts on one frame: pass that frame's features with B = 1 (expanded here);
        training passes B = N frames, one prompt each.
        """
        count = maps.shape[0]
        skip4, skip8, tokens = (f.expand(count, -1, -1, -1) if f.shape[0] != count else f
                                for f in (skip4, skip8, tokens))
        maps = maps.to(tokens.dtype)
        maps8 = F.avg_pool2d(maps, 2)
        maps16 = F.avg_pool2d(maps, 4)
        x = self.in16(torch.cat([tokens, maps16], dim=1))  # (N, width, H/16, W/16)
        for block in self.context:
            x = x + block(x)
        x = F.interpolate(x, size=skip8.shape[-2:], mode="bilinear", align_corners=False)
        x = self.in8(torch.cat([skip8, maps8, x], dim=1))  # (N, width/2, H/8, W/8)
        x = F.interpolate(x, size=skip4.shape[-2:], mode="bilinear", align_corners=False)
        x = self.in4(torch.cat([skip4, maps, x], dim=1))  # (N, width/4, H/4, W/4)
        return self.out(x)
