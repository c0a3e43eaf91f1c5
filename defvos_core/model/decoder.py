"""FPN-style decoder: propagated stride-16 tokens + encoder skips -> stride-4 logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    groups = 8 if out_channels % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.GroupNorm(groups, out_channels), nn.ReLU(inplace=True))


class FPNDecoder(nn.Module):
    """Decodes (visual tokens, ID tokens, encoder tokens) with stride-8/4 skips into logits."""

    def __init__(self, embed_dim: int, skip_channels: tuple[int, int], dim: int,
                 num_slots: int) -> None:
        super().__init__()
        self.input = _conv_block(3 * embed_dim, dim)
        self.lateral8 = nn.Conv2d(skip_channels[1], dim, 1)
        self.lateral4 = nn.Conv2d(skip_channels[0], dim, 1)
        self.refine8 = _conv_block(dim, dim)
        self.refine4 = _conv_block(dim, dim // 2)
        self.head = nn.Conv2d(dim // 2, num_slots, 1)

    def forward(self, visual: torch.Tensor, identity: torch.Tensor, tokens: torch.Tensor,
                skip8: torch.Tensor, skip4: torch.Tensor) -> torch.Tensor:
        """Decode logits (Bi, S+1, 4h, 4w).

        visual/tokens (B, C, h, w), identity (Bi, C, h, w), skip8 (B, C8, 2h, 2w),
        skip4 (B, C4, 4h, 4w).
        """
        x = self.input[1:](self._input_conv(visual, identity, tokens))
        x = F.interpolate(x, size=skip8.shape[-2:], mode="bilinear", align_corners=False)
        x = self.refine8(x + self.lateral8(skip8))
        x = F.interpolate(x, size=skip4.shape[-2:], mode="bilinear", align_corners=False)
        x = self.refine4(x + self.lateral4(skip4))
        return self.head(x)

    def _input_conv(self, visual: torch.Tensor, identity: torch.Tensor,
                    tokens: torch.Tensor) -> torch.Tensor:
        """Return the input convolution of cat([visual, identity, tokens]): (Bi, dim, h, w).

        A convolution is linear in its input channels, so it is computed as the convolution of
        the visual + encoder channels plus that of the identity channels: in inference the first
        (B = 1) is shared by every identity bank and runs once, whatever the number of banks.
        """
        # (dim, 3C, 3, 3) -> its visual, identity and encoder input channels
        to_visual, to_identity, to_tokens = self.input[0].weight.split(visual.shape[1], dim=1)
        shared = F.conv2d(visual, to_visual, padding=1) + F.conv2d(tokens, to_tokens, padding=1)
        return shared + F.conv2d(identity, to_identity, padding=1)
