"""Distillation and supervised losses for the defvos student (arXiv 2401.13937).

Conventions shared with the model:

* Logits are ``(B, S+1, H, W)``: channel 0 is background, channels ``1..S`` are ID slots.
* ``valid_slots`` says which channels hold real objects. It is either a boolean/float
  mask ``(B, S+1)`` (non-zero = valid) or the number of objects per item (an integer
  tensor ``(B,)`` or a sequence of ints; channel ``c`` is valid iff ``c <= num_objects``).
  The background channel is always treated as valid. ``None`` means every channel is valid.
  Invalid channels are masked to ``-inf`` before any softmax over channels and skipped by
  every per-object term, so their logits never influence a loss.
* Attention maps are one tensor ``(B, heads, Nq, Nk)`` per propagation layer, rows are
  softmax distributions over the ``Nk`` sampled memory keys, ``Nq = hq * wq`` queries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_LABEL = 255
ValidSlots = Union[Tensor, Sequence[int], None]

__all__ = [
    'IGNORE_LABEL',
    'DistillationWeights',
    'attention_cka_loss',
    'bootstrapped_cross_entropy',
    'distillation_loss',
    'inter_object_kl',
    'intra_object_kl',
    'linear_cka',
    'linear_cka_batched',
    'pair_layers',
    'soft_jaccard_loss',
    'supervised_loss',
    'valid_channel_mask',
]


# --------------------------------------------------------------------------- helpers

def valid_channel_mask(valid_slots: ValidSlots, batch: int, channels: int,
                       device: torch.device) -> Tensor:
    """Return a boolean ``(B, S+1)`` mask of valid channels (background always valid)."""
    if valid_slots is None:
        return torch.ones(batch, channels, dtype=torch.bool, device=device)
    if not isinstance(valid_slots, Tensor):
        valid_slots = torch.as_tensor(list(valid_slots), dtype=torch.long)
    valid_slots = valid_slots.to(device)
    if valid_slots.dim() == 1 and not valid_slots.dtype.is_floating_point \
            and valid_slots.dtype != torch.bool:
        if valid_slots.shape[0] != batch:
            raise ValueError(f'valid_slots: expected num_objects of shape ({batch},), '
                             f'got {tuple(valid_slots.shape)}')
        channel_ids = torch.arange(channels, device=device)
        mask = channel_ids[None, :] <= valid_slots[:, None]  # (B, S+1)
    else:
        if valid_slots.shape != (batch, channels):
            raise ValueError(f'valid_slots: expected a mask of shape ({batch}, {channels}) '
                             f'or num_objects of shape ({batch},), '
                             f'got {tuple(valid_slots.shape)}')
        mask = valid_slots != 0
    mask = mask.clone()
    mask[:, 0] = True
    return mask


def _zero_like_graph(reference: Tensor) -> Tensor:
    """Return a scalar zero that keeps ``reference`` in the autograd graph."""
    return reference.sum() * 0.0


def _masked_log_softmax(logits: Tensor, channel_mask: Tensor, temperature: float) -> Tensor:
    """Log-softmax over channels of ``logits / tau`` with invalid channels at ``-inf``.

    logits (B, C, H, W), channel_mask (B, C) bool -> (B, C, H, W); invalid entries are 0
    (not -inf) so that ``p * log p`` products stay finite.
    """
    scaled = (logits / temperature).masked_fill(~channel_mask[:, :, None, None], float('-inf'))
    log_probs = F.log_softmax(scaled, dim=1)
    return torch.where(channel_mask[:, :, None, None], log_probs, torch.zeros_like(log_probs))


def _as_float32(x: Tensor) -> Tensor:
    """Upcast half precision tensors; keep float32/float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize ``(B, C, H, W)`` logits to ``size`` if needed."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode='bilinear', align_corners=False)


def _check_labels(logits: Tensor, labels: Tensor, name: str) -> None:
    if labels.dim() != 3 or labels.shape[0] != logits.shape[0] \
            or labels.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f'{name}: labels must be (B, H, W) = ({logits.shape[0]}, '
                         f'{logits.shape[-2]}, {logits.shape[-1]}), got {tuple(labels.shape)}')


# --------------------------------------------------------------------------- CKA

def linear_cka_batched(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Linear CKA per batch item: x (B, n, p), y (B, n, q) -> (B,).

    Columns are centred over the n rows; CKA = ||YᵀX||²_F / (||XᵀX||_F ||YᵀY||_F).
    Only p×p, q×q and q×p products are formed, so large n with small p, q is cheap.
    Each input is first divided by its Frobenius norm (CKA is scale invariant), which
    keeps the products well scaled; a constant input gives CKA 0, not NaN.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f'linear_cka_batched: expected x (B, n, p) and y (B, n, q) with the '
                         f'same B and n, got {tuple(x.shape)} and {tuple(y.shape)}')
    x = _as_float32(x)
    y = _as_float32(y)
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    x = x / (torch.linalg.matrix_norm(x)[:, None, None] + eps)
    y = y / (torch.linalg.matrix_norm(y)[:, None, None] + eps)
    cross = torch.linalg.matrix_norm(y.transpose(1, 2) @ x) ** 2  # (B,) from (B, q, p)
    self_x = torch.linalg.matrix_norm(x.transpose(1, 2) @ x)      # (B,) from (B, p, p)
    self_y = torch.linalg.matrix_norm(y.transpose(1, 2) @ y)      # (B,) from (B, q, q)
    return cross / (self_x * self_y).clamp_min(eps)


def linear_cka(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Linear CKA of x (n, p) and y (n, q) -> scalar tensor in [0, 1]."""
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f'linear_cka: expected 2-D x (n, p) and y (n, q), '
                         f'got {tuple(x.shape)} and {tuple(y.shape)}')
    return linear_cka_batched(x[None], y[None], eps=eps)[0]


def pair_layers(num_student: int, num_teacher: int) -> list[tuple[int, int]]:
    """Pair every student layer with the teacher layer at the same relative depth.

    Depth is measured at a layer's output: student layer i (0-based) ends at relative
    depth (i+1)/L_s and is paired with teacher layer ``ceil((i+1) * L_t / L_s) - 1``.
    Equal counts pair one-to-one; a 1-layer student pairs with the teacher's last layer;
    a 2-layer student with a 3-layer teacher pairs (0, 1) and (1, 2). Returns
    ``[(student_index, teacher_index), ...]``, one pair per student layer.
    """
    if num_student < 1 or num_teacher < 1:
        raise ValueError(f'pair_layers: need at least one layer each, got student '
                         f'{num_student} and teacher {num_teacher}')
    return [(i, math.ceil((i + 1) * num_teacher / num_student) - 1)
            for i in range(num_student)]


def _head_mean(attention: Tensor, grid: tuple[int, int], name: str) -> Tensor:
    """(B, heads, Nq, Nk) -> (B, Nq, Nk), checking Nq against the query grid."""
    if attention.dim() != 4:
        raise ValueError(f'attention_cka_loss: {name} maps must be (B, heads, Nq, Nk), '
                         f'got {tuple(attention.shape)}')
    if attention.shape[2] != grid[0] * grid[1]:
        raise ValueError(f'attention_cka_loss: {name} maps have Nq={attention.shape[2]} '
                         f'but {name}_grid {tuple(grid)} has {grid[0] * grid[1]} positions')
    return attention.mean(dim=1)


def _resample_queries(attention: Tensor, source_grid: tuple[int, int],
                      target_grid: tuple[int, int]) -> Tensor:
    """Bilinearly move attention rows to another query grid: (B, Nq, Nk) -> (B, Nq', Nk)."""
    if tuple(source_grid) == tuple(target_grid):
        return attention
    batch, _, keys = attention.shape
    row_maps = attention.transpose(1, 2).reshape(batch, keys, source_grid[0], source_grid[1])
    row_maps = F.interpolate(row_maps, size=tuple(target_grid), mode='bilinear',
                             align_corners=False)  # (B, Nk, hq', wq')
    return row_maps.flatten(2).transpose(1, 2)


def attention_cka_loss(student_maps: Sequence[Tensor], teacher_maps: Sequence[Tensor],
                       student_grid: tuple[int, int],
                       teacher_grid: tuple[int, int]) -> Tensor:
    """Attention transfer loss: sum over layer pairs of the batch mean of (1 - CKA).

    Layers are paired by :func:`pair_layers`. Heads are averaged; teacher rows are
    resampled onto the student's query grid when the grids differ. The memory key
    counts Nk may differ (CKA compares n×p with n×q matrices, n = student queries).
    """
    if len(student_maps) == 0 or len(teacher_maps) == 0:
        raise ValueError(f'attention_cka_loss: need at least one attention map each, got '
                         f'{len(student_maps)} student and {len(teacher_maps)} teacher maps')
    total = None
    for student_index, teacher_index in pair_layers(len(student_maps), len(teacher_maps)):
        student = _head_mean(student_maps[student_index], student_grid, 'student')
        teacher = _head_mean(teacher_maps[teacher_index], teacher_grid, 'teacher')
        if student.shape[0] != teacher.shape[0]:
            raise ValueError(f'attention_cka_loss: batch sizes differ, student '
                             f'{student.shape[0]} vs teacher {teacher.shape[0]}')
        teacher = _resample_queries(_as_float32(teacher), teacher_grid, student_grid)
        pair_loss = (1.0 - linear_cka_batched(student, teacher)).mean()
        total = pair_loss if total is None else total + pair_loss
    return total


# --------------------------------------------------------------------------- logit KL

def intra_object_kl(student_logits: Tensor, teacher_logits: Tensor,
                    valid_slots: ValidSlots = None, temperature: float = 1.0,
                    include_background: bool = False) -> Tensor:
    """Intra-object KL: spatial distribution of each object's logit channel.

    For every valid object slot (channels >= 1; background only if
    ``include_background``), softmax over the H*W positions of ``logits / tau`` and take
    KL(teacher || student), times tau². Mean over all valid (item, object) pairs.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f'intra_object_kl: logits shapes differ, student '
                         f'{tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}')
    batch, channels = student_logits.shape[:2]
    mask = valid_channel_mask(valid_slots, batch, channels, student_logits.device)
    mask[:, 0] = include_background
    if not bool(mask.any()):
        return _zero_like_graph(student_logits)
    student_log_p = F.log_softmax(_as_float32(student_logits).flatten(2) / temperature, dim=-1)
    teacher_log_p = F.log_softmax(_as_float32(teacher_logits).flatten(2) / temperature, dim=-1)
    kl = (teacher_log_p.exp() * (teacher_log_p - student_log_p)).sum(dim=-1)  # (B, S+1)
    return kl[mask].mean() * temperature ** 2


def inter_object_kl(student_logits: Tensor, teacher_logits: Tensor,
                    valid_slots: ValidSlots = None, temperature: float = 1.0) -> Tensor:
    """Inter-object KL: per-pixel distribution over background + valid object channels.

    Softmax over channels of ``logits / tau`` (invalid slots at -inf), KL(teacher ||
    student) per pixel, times tau². Mean over pixels and batch.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f'inter_object_kl: logits shapes differ, student '
                         f'{tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}')
    batch, channels = student_logits.shape[:2]
    mask = valid_channel_mask(valid_slots, batch, channels, student_logits.device)
    student_log_p = _masked_log_softmax(_as_float32(student_logits), mask, temperature)
    teacher_log_p = _masked_log_softmax(_as_float32(teacher_logits), mask, temperature)
    teacher_p = teacher_log_p.exp() * mask[:, :, None, None]  # invalid channels -> 0
    kl = (teacher_p * (teacher_log_p - student_log_p)).sum(dim=1)  # (B, H, W)
    return kl.mean() * temperature ** 2


# --------------------------------------------------------------------------- supervised

def bootstrapped_cross_entropy(logits: Tensor, labels: Tensor, top_k_fraction: float = 0.15,
                               warmup_ratio: float = 1.0,
                               valid_slots: ValidSlots = None) -> Tensor:
    """AOT-style bootstrapped CE: mean of the hardest pixel losses.

    logits (B, S+1, H, W), labels (B, H, W) long with 255 = ignore. The fraction of
    pixels kept is ``1 - warmup_ratio * (1 - top_k_fraction)``: ``warmup_ratio`` is the
    caller's warm-up progress in [0, 1] (AOT: ``min(step / mining_steps, 1)``), so 1.0
    (default) uses ``top_k_fraction`` and 0.0 plain CE; ``top_k_fraction=1.0`` is always
    plain CE (equal to ``F.cross_entropy(..., ignore_index=255)``). The top k =
    ceil(fraction * valid pixels) are pooled over the whole batch. Labels must point at
    valid channels; invalid slots are masked to -inf.
    """
    _check_labels(logits, labels, 'bootstrapped_cross_entropy')
    if not 0.0 < top_k_fraction <= 1.0 or not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f'bootstrapped_cross_entropy: need 0 < top_k_fraction <= 1 and '
                         f'0 <= warmup_ratio <= 1, got {top_k_fraction} and {warmup_ratio}')
    fraction = 1.0 - warmup_ratio * (1.0 - top_k_fraction)
    logits = _as_float32(logits)
    if valid_slots is not None:
        mask = valid_channel_mask(valid_slots, logits.shape[0], logits.shape[1], logits.device)
        logits = logits.masked_fill(~mask[:, :, None, None], float('-inf'))
    pixel_losses = F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL,
                                   reduction='none')  # (B, H, W), 0 at ignored pixels
    pixel_losses = pixel_losses[labels != IGNORE_LABEL]  # (num_valid,)
    if pixel_losses.numel() == 0:  # all void (unlabelled clips); logits may hold -inf
        return _zero_like_graph(pixel_losses)
    if fraction >= 1.0:
        return pixel_losses.mean()
    top_k = max(1, math.ceil(fraction * pixel_losses.numel()))
    return torch.topk(pixel_losses, top_k, sorted=False).values.mean()


def soft_jaccard_loss(logits: Tensor, labels: Tensor, valid_slots: ValidSlots = None,
                      smooth: float = 1.0) -> Tensor:
    """1 - soft IoU per valid channel (background included), averaged.

    Probabilities are the softmax over valid channels; pixels labelled 255 are ignored.
    IoU = (Σ p·g + smooth) / (Σ p + Σ g - Σ p·g + smooth), so a channel absent from both
    prediction and labels scores 1. Mean over all valid (item, channel) pairs.
    """
    _check_labels(logits, labels, 'soft_jaccard_loss')
    batch, channels = logits.shape[:2]
    mask = valid_channel_mask(valid_slots, batch, channels, logits.device)
    probs = _masked_log_softmax(_as_float32(logits), mask, 1.0).exp() * mask[:, :, None, None]
    known = (labels != IGNORE_LABEL)  # (B, H, W)
    target = F.one_hot(torch.where(known, labels, torch.zeros_like(labels)), channels)
    target = target.permute(0, 3, 1, 2).to(probs.dtype)  # (B, S+1, H, W)
    known = known[:, None].to(probs.dtype)
    probs = probs * known
    target = target * known
    intersection = (probs * target).flatten(2).sum(-1)  # (B, S+1)
    union = probs.flatten(2).sum(-1) + target.flatten(2).sum(-1) - intersection
    iou = (intersection + smooth) / (union + smooth)
    return (1.0 - iou)[mask].mean()


def supervised_loss(logits: Tensor, labels: Tensor, valid_slots: ValidSlots = None,
                    top_k_fraction: float = 0.15, warmup_ratio: float = 1.0) -> Tensor:
    """Bootstrapped CE + soft Jaccard (teacher stage / optional student term).

    Logits are bilinearly resized to the label size first when they differ.
    """
    logits = _resize_logits(logits, tuple(labels.shape[-2:]))
    return (bootstrapped_cross_entropy(logits, labels, top_k_fraction, warmup_ratio,
                                       valid_slots)
            + soft_jaccard_loss(logits, labels, valid_slots))


# --------------------------------------------------------------------------- combined

@dataclass
class DistillationWeights:
    """Weights of the distillation terms; a zero weight skips the term entirely."""

    attention: float = 1.0
    intra: float = 1.0
    inter: float = 1.0
    supervised: float = 0.0
    temperature: float = 1.0


def distillation_loss(student_out: Any, teacher_out: Any,
                      weights: Optional[DistillationWeights] = None,
                      labels: Optional[Tensor] = None, valid_slots: ValidSlots = None,
                      top_k_fraction: float = 0.15, warmup_ratio: float = 1.0
                      ) -> tuple[Tensor, dict[str, float]]:
    """L = w_att·L_att + w_intra·L_intra + w_inter·L_inter (+ w_sup·(CE + Jaccard)).

    ``student_out`` / ``teacher_out`` are duck-typed: attributes ``logits`` (B, S+1, H, W),
    ``attention_maps`` (list of (B, heads, Nq, Nk), may be None when w_att = 0) and
    ``query_grid`` (hq, wq). Teacher tensors are detached; teacher logits are resized
    bilinearly to the student's size. A term with weight 0 is not computed and not
    reported; the supervised term needs ``labels`` (B, H, W) and is skipped without them;
    its hard-pixel mining warms up with ``warmup_ratio`` as in `bootstrapped_cross_entropy`.
    Returns the total and a dict of the unweighted terms (floats) plus ``'total'``.
    """
    weights = weights if weights is not None else DistillationWeights()
    student_logits = student_out.logits  # (B, S+1, H, W)
    total = _zero_like_graph(student_logits)
    terms: dict[str, Tensor] = {}

    if weights.attention != 0.0:
        terms['attention'] = attention_cka_loss(
            student_out.attention_maps, [m.detach() for m in teacher_out.attention_maps],
            tuple(student_out.query_grid), tuple(teacher_out.query_grid))
        total = total + weights.attention * terms['attention']

    if weights.intra != 0.0 or weights.inter != 0.0:
        teacher_logits = _resize_logits(teacher_out.logits.detach(),
                                        tuple(student_logits.shape[-2:]))
        if weights.intra != 0.0:
            terms['intra'] = intra_object_kl(student_logits, teacher_logits, valid_slots,
                                             weights.temperature)
            total = total + weights.intra * terms['intra']
        if weights.inter != 0.0:
            terms['inter'] = inter_object_kl(student_logits, teacher_logits, valid_slots,
                                             weights.temperature)
            total = total + weights.inter * terms['inter']

    if weights.supervised != 0.0 and labels is not None:
        terms['supervised'] = supervised_loss(student_logits, labels, valid_slots,
                                              top_k_fraction, warmup_ratio)
        total = total + weights.supervised * terms['supervised']

    report = {name: float(value.detach()) for name, value in terms.items()}
    report['total'] = float(total.detach())
    return total, report
