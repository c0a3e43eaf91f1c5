"""Unroll the model over a training clip the way the tracker runs it at inference.

All T frames are encoded in one batch (B*T). Frame 0 is the reference: its identity
entries come from a given mask (ground truth, or the teacher's seed). For t = 1..T-1 the
model segments frame t with long-term memory = frames 0..t-1 and short-term memory =
frame t-1; the identity entries of each predicted frame come from the softmax of its
logits over the valid channels (background + the clip's objects), which is what the
tracker stores. Logits are returned at stride 4 and upsampled to the frame size.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from defvos_core.model.encoder import normalize_image
from defvos_core.model.propagation import MemoryTensors
from defvos_core.model.vos_model import STRIDE, VOSModel, mask_to_stride4, upsample_logits
from defvos_core.training.losses import IGNORE_LABEL, valid_channel_mask


class FrameOutput(NamedTuple):
    """One segmented frame; the attribute names are what `distillation_loss` reads."""

    logits: torch.Tensor  # (B, S+1, H, W) upsampled to the frame size
    attention_maps: list[torch.Tensor]  # per layer (B, heads, N, t*G): long-term weights
    query_grid: tuple[int, int]  # (h, w) of the stride-16 tokens
    stride4_logits: torch.Tensor  # (B, S+1, H/4, W/4)


def labels_to_soft_mask(labels: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Label map (B, H, W) int64 (255 void -> background) -> stride-4 one-hot (B, S+1, H/4, W/4)."""
    known = torch.where(labels == IGNORE_LABEL, torch.zeros_like(labels), labels)
    if int(known.max()) >= num_slots:
        raise ValueError(f"labels hold object id {int(known.max())} but the model has only "
                         f"{num_slots - 1} slots (max_objects)")
    one_hot = F.one_hot(known, num_slots).permute(0, 3, 1, 2).float()  # (B, S+1, H, W)
    return mask_to_stride4(one_hot)


def masked_probabilities(logits: torch.Tensor, num_objects: torch.Tensor) -> torch.Tensor:
    """Softmax over the valid channels of stride-4 logits (B, S+1, h4, w4); invalid slots 0."""
    mask = valid_channel_mask(num_objects, logits.shape[0], logits.shape[1], logits.device)
    masked = logits.float().masked_fill(~mask[:, :, None, None], float("-inf"))
    return torch.softmax(masked, dim=1)


def unroll_clip(model: VOSModel, frames: torch.Tensor, first_mask: torch.Tensor,
                num_objects: torch.Tensor, detach_memory_masks: bool = True
                ) -> list[FrameOutput]:
    """Segment frames 1..T-1 of a clip from the mask of frame 0.

    frames: (B, T, 3, H, W) RGB in [0, 1], H and W multiples of 16; first_mask: stride-4
    soft mask (B, S+1, H/4, W/4) of frame 0 (`labels_to_soft_mask`); num_objects: (B,)
    int64, the valid slots are 1..num_objects. `detach_memory_masks` stops gradients
    through the predicted masks that feed later frames' identity memory (the tracker never
    back-propagates through them); gradients still reach the encoder, the memory
    projections and the identity bank. Returns T-1 `FrameOutput`s.
    """
    batch, length, _, height, width = frames.shape
    if length < 2:
        raise ValueError(f"a training clip needs at least 2 frames, got {length}")
    if height % STRIDE or width % STRIDE:
        raise ValueError(f"clip frames are {height}x{width}; both sides must be multiples of "
                         f"{STRIDE} (set data.clip.crop_size accordingly)")
    features = model.encode(normalize_image(frames.flatten(0, 1)))  # batched over B*T

    def per_frame(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unflatten(0, (batch, length))  # (B, T, ...)

    keys, values = per_frame(features.key), per_frame(features.value)  # (B, T, L, C, h, w)
    skip4, skip8, tokens = (per_frame(features.skip4), per_frame(features.skip8),
                            per_frame(features.tokens))
    query_grid = (tokens.shape[-2], tokens.shape[-1])
    identities = [model.encode_identity(first_mask)]  # each (B, L, C, h, w)
    outputs: list[FrameOutput] = []
    for t in range(1, length):
        memory = MemoryTensors(
            long_key=keys[:, :t], long_value=values[:, :t],
            long_id=torch.stack(identities, dim=1),
            short_key=keys[:, t - 1:t], short_value=values[:, t - 1:t],
            short_id=identities[-1][:, None])
        current = type(features)(skip4[:, t], skip8[:, t], tokens[:, t], keys[:, t],
                                 values[:, t])
        segmented = model.segment(current, memory)
        logits = segmented.logits  # (B, S+1, H/4, W/4)
        outputs.append(FrameOutput(upsample_logits(logits, (height, width)),
                                   list(segmented.attention_maps), query_grid, logits))
        if t < length - 1:
            probabilities = masked_probabilities(logits, num_objects)
            if detach_memory_masks:
                probabilities = probabilities.detach()
            identities.append(model.encode_identity(probabilities.to(logits.dtype)))
    return outputs


class ClipUnroller(nn.Module):
    """`unroll_clip` as a module forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: VOSModel, detach_memory_masks: bool = True) -> None:
        super().__init__()
        self.model = model
        self.detach_memory_masks = detach_memory_masks

    def forward(self, frames: torch.Tensor, first_mask: torch.Tensor,
                num_objects: torch.Tensor) -> list[FrameOutput]:
        return unroll_clip(self.model, frames, first_mask, num_objects,
                           self.detach_memory_masks)
