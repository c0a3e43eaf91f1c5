"""Tests for the EfficientNet-Lite encoder and its ImageNet weights."""
import numpy as np
import pytest
import torch
from skimage import data, transform

from defvos_core.model.encoder import (
    EfficientNetLiteEncoder,
    imagenet_weights_path,
    normalize_image,
)

EGYPTIAN_CAT = 285
VARIANTS = ("lite0", "lite2")
EXPECTED_CHANNELS = {"lite0": (24, 40, 112), "lite2": (24, 48, 120)}
EXPECTED_BLOCKS = {"lite0": 16, "lite2": 21}


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


def _chelsea_batch(size: int = 224) -> torch.Tensor:
    """Return skimage's cat photo as a (1, 3, size, size) tensor in [-1, 1]."""
    image = transform.resize(data.chelsea(), (size, size), anti_aliasing=True)  # (H, W, 3) [0, 1]
    image01 = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    return normalize_image(image01)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pretrained_weights_classify_cat(variant: str) -> None:
    encoder = EfficientNetLiteEncoder(variant, pretrained=True).eval()
    with torch.no_grad():
        logits = encoder.classify(_chelsea_batch())
    assert logits.shape == (1, 1000)
    assert int(logits.argmax(dim=1)) == EGYPTIAN_CAT
    total = sum(p.numel() for p in encoder.parameters())
    print(f"{variant}: {len(encoder._blocks)} blocks, trunk to stride 16 "
          f"{encoder.trunk_parameter_count() / 1e6:.3f} M params, total {total / 1e6:.3f} M")


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_matches_module_exactly(variant: str) -> None:
    checkpoint = torch.load(imagenet_weights_path(variant), map_location="cpu",
                            weights_only=True)
    encoder = EfficientNetLiteEncoder(variant)
    result = encoder.load_state_dict(checkpoint, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    own = encoder.state_dict()
    assert all(own[key].shape == value.shape for key, value in checkpoint.items())
    assert len(encoder._blocks) == EXPECTED_BLOCKS[variant]


def test_normalize_image_maps_to_unit_range() -> None:
    image01 = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(normalize_image(image01).flatten(), torch.tensor([-1.0, 0.0, 1.0]))
    image_u8 = torch.tensor([0, 255, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    assert torch.allclose(normalize_image(image_u8).flatten(), torch.tensor([-1.0, 1.0, 1.0]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_feature_shapes_multiple_of_16(variant: str) -> None:
    encoder = EfficientNetLiteEncoder(variant).eval()
    assert encoder.feature_channels == EXPECTED_CHANNELS[variant]
    with torch.no_grad():
        features = encoder(torch.zeros(2, 3, 240, 432))
    shapes = [tuple(f.shape) for f in features]
    c4, c8, c16 = EXPECTED_CHANNELS[variant]
    assert shapes == [(2, c4, 60, 108), (2, c8, 30, 54), (2, c16, 15, 27)]


def test_feature_shapes_other_size_round_up() -> None:
    # Each stride-2 conv pads k // 2, so a side of length n becomes ceil(n / 2):
    # features are ceil(H / s) x ceil(W / s). The engine pads to multiples of 16 anyway.
    encoder = EfficientNetLiteEncoder("lite0").eval()
    with torch.no_grad():
        features = encoder(torch.zeros(1, 3, 241, 427))
    assert [tuple(f.shape[-2:]) for f in features] == [(61, 107), (31, 54), (16, 27)]


def test_gradient_reaches_stem_with_pretrained_weights() -> None:
    encoder = EfficientNetLiteEncoder("lite0", pretrained=True).train()
    features = encoder(torch.randn(1, 3, 64, 64))
    sum(f.mean() for f in features).backward()
    stem_grad = encoder._conv_stem.weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0


def test_freeze_batchnorm_survives_train() -> None:
    encoder = EfficientNetLiteEncoder("lite0")
    encoder.freeze_batchnorm()
    encoder.train()
    assert not encoder._bn0.training and not encoder._bn0.weight.requires_grad
    running_mean = encoder._blocks[1]._bn0.running_mean.clone()
    encoder(torch.randn(1, 3, 32, 32))
    assert torch.equal(encoder._blocks[1]._bn0.running_mean, running_mean)
    assert encoder._conv_stem.weight.requires_grad
