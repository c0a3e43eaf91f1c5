"""The stateless video object segmentation model (teacher and student alike).

Encoder (EfficientNet-Lite) -> identity bank -> gated propagation module -> FPN decoder.
The model holds no video state: the inference engine (`defvos_core.inference`) and the
training loop own the memory and pass it in. Its three per-frame computations are the
graphs an exporter needs:

- `encode(image)`: frame features and the frame's visual memory entries;
- `encode_identity(mask)`: a frame's identity memory entries from its mask;
- `segment(features, memory)`: propagation + decoding -> stride-4 logits.

With `config.prompt_head`, `prompt_head` turns boxes / clicks on a seed frame's features into
mask logits (`defvos_core.model.prompt_head`, run by `defvos_core.inference.prompts`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from defvos_core.config import ModelConfig
from defvos_core.model.decoder import FPNDecoder
from defvos_core.model.encoder import EfficientNetLiteEncoder
from defvos_core.model.identity import IdentityBank
from defvos_core.model.prompt_head import PromptHead
from defvos_core.model.propagation import GatedPropagationModule, MemoryTensors

STRIDE = 16  # input sizes must be multiples of this


class FrameFeatures(NamedTuple):
    """What `encode` returns for a frame (B = 1 in inference)."""

    skip4: torch.Tensor  # (B, C4, H/4, W/4)
    skip8: torch.Tensor  # (B, C8, H/8, W/8)
    tokens: torch.Tensor  # (B, C, H/16, W/16)
    key: torch.Tensor  # (B, L, C, H/16, W/16) visual memory keys of this frame
    value: torch.Tensor  # (B, L, C, H/16, W/16) visual memory values of this frame


class SegmentOutput(NamedTuple):
    logits: torch.Tensor  # (Bi, S+1, H/4, W/4)
    attention_maps: list[torch.Tensor]  # per layer (B, heads, N, T*G)


class VOSModel(nn.Module):
    """One model class; `student_config()` / `teacher_config()` select the size."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = EfficientNetLiteEncoder(config.encoder, pretrained=config.pretrained_encoder)
        self.encoder.drop_classifier()
        channels4, channels8, channels16 = self.encoder.feature_channels
        self.project = nn.Sequential(nn.Conv2d(channels16, config.embed_dim, 1),
                                     nn.GroupNorm(8, config.embed_dim))
        self.identity_bank = IdentityBank(config.num_slots, config.embed_dim)
        self.propagation = GatedPropagationModule(
            config.embed_dim, config.num_layers, config.num_heads, tuple(config.sample_grid),
            config.offset_range, config.short_term_radius, config.ffn_expand)
        self.decoder = FPNDecoder(config.embed_dim, (channels4, channels8), config.decoder_dim,
                                  config.num_slots)
        # Optional box/click -> seed-mask head; absent, old weights files load strictly.
        self.prompt_head = (PromptHead((channels4, channels8, config.embed_dim))
                            if config.prompt_head else None)

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """Normalised image (B, 3, H, W), H and W multiples of 16 -> features + memory entries."""
        skip4, skip8, features16 = self.encoder(image)
        tokens = self.project(features16)  # (B, C, h, w)
        grid = tokens.shape[-2:]
        key, value = self.propagation.memory_entries(tokens.flatten(2).transpose(1, 2), grid)
        return FrameFeatures(skip4, skip8, tokens, key, value)

    def encode_identity(self, mask: torch.Tensor) -> torch.Tensor:
        """Soft mask at stride 4 (Bi, S+1, H/4, W/4) -> identity entries (Bi, L, C, H/16, W/16)."""
        grid = (mask.shape[-2] // 4, mask.shape[-1] // 4)
        return self.propagation.identity_entries(self.identity_bank(mask), grid)

    def segment(self, features: FrameFeatures, memory: MemoryTensors) -> SegmentOutput:
        """Propagate the memory into the current frame and decode per-slot logits."""
        tokens = features.tokens
        batch, channels, height, width = tokens.shape
        identity_batch = memory.long_id.shape[0]
        propagated = self.propagation(tokens.flatten(2).transpose(1, 2), (height, width), memory,
                                      identity_batch)
        visual = propagated.visual.transpose(1, 2).reshape(batch, channels, height, width)
        identity = propagated.identity.transpose(1, 2).reshape(identity_batch, channels,
                                                               height, width)
        logits = self.decoder(visual, identity, tokens, features.skip8, features.skip4)
        return SegmentOutput(logits, propagated.attention_maps)

    def parameter_count(self) -> int:
        """Count the parameters."""
        return sum(p.numel() for p in self.parameters())


def mask_to_stride4(probabilities: torch.Tensor) -> torch.Tensor:
    """Full-resolution soft masks (B, S+1, H, W) -> stride-4 soft masks (B, S+1, H/4, W/4)."""
    return F.avg_pool2d(probabilities, kernel_size=4, stride=4)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Stride-4 logits -> logits at `size` (bilinear)."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
