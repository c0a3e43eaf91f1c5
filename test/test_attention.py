"""Deformable and local attention: exactness at zero offsets, shift following, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from defvos_core.model import attention
from defvos_core.model.attention import (
    DeformableSampler,
    apply_local_weights,
    apply_weights,
    attention_weights,
    local_attention_weights,
    reference_grid,
    use_dense_local,
)
from defvos_core.model.propagation import GatedPropagationLayer, MemoryTensors

torch.set_num_threads(1)


def full_attention(query, key_map, value_map, heads):
    """Vanilla attention of (B, N, C) queries over every position of (B, C, h, w) maps."""
    keys = key_map.flatten(2).transpose(1, 2)
    values = value_map.flatten(2).transpose(1, 2)
    batch, length, channels = query.shape
    head_dim = channels // heads
    q = query.reshape(batch, length, heads, head_dim).transpose(1, 2)
    k = keys.reshape(batch, -1, heads, head_dim).transpose(1, 2)
    v = values.reshape(batch, -1, heads, head_dim).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(batch, length, channels)


def test_reference_grid_is_at_cell_centres():
    grid = reference_grid(2, 4)
    assert grid.shape == (2, 4, 2)
    assert torch.allclose(grid[0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.allclose(grid[:, 0, 1], torch.tensor([-0.5, 0.5]))


def test_zero_offsets_reproduce_attention_over_the_reference_grid():
    torch.manual_seed(0)
    channels, height, width = 8, 6, 10
    sampler = DeformableSampler(channels, (height, width), offset_range=2.0)
    query = torch.randn(1, height * width, channels)
    key_map = torch.randn(1, 1, channels, height, width)
    value_map = torch.randn(1, 1, channels, height, width)
    points = sampler.sample_points(query.transpose(1, 2).reshape(1, channels, height, width))
    # The offset net starts at zero: points are the reference grid itself.
    assert torch.allclose(points, reference_grid(height, width).unsqueeze(0), atol=1e-6)
    keys = sampler.sample(key_map, points)
    values = sampler.sample(value_map, points)
    # A grid as fine as the map samples every position exactly: vanilla attention results.
    expected = full_attention(query, key_map[:, 0], value_map[:, 0], heads=2)
    got = apply_weights(attention_weights(query, keys, 2), values)
    assert torch.allclose(got, expected, atol=1e-5)


def test_coarse_grid_samples_bilinearly_at_reference_points():
    torch.manual_seed(1)
    sampler = DeformableSampler(4, (3, 5), offset_range=1.0)
    maps = torch.randn(2, 3, 4, 12, 20)  # (B, T, C, h, w)
    points = reference_grid(3, 5).unsqueeze(0).expand(2, 3, 5, 2)
    sampled = sampler.sample(maps, points)
    assert sampled.shape == (2, 3 * 15, 4)
    manual = F.grid_sample(maps[1, 2:3], points[:1], align_corners=False)  # (1, C, 3, 5)
    assert torch.allclose(sampled[1, 30:45], manual.flatten(2)[0].T, atol=1e-6)


def test_offsets_follow_a_known_shift_of_the_memory():
    torch.manual_seed(2)
    channels, rows, cols = 4, 4, 8
    sampler = DeformableSampler(channels, (rows, cols), offset_range=3.0)
    memory = torch.randn(1, 1, channels, rows, cols)
    shift = 1  # the scene moved one grid cell to the right
    shifted = torch.roll(memory, shifts=shift, dims=-1)
    # Offsets of +1 cell in x (tanh(b) * range = 1), none in y.
    with torch.no_grad():
        sampler.offset_net[-1].bias.copy_(torch.tensor([math.atanh(1 / 3), 0.0]))
    points = sampler.sample_points(torch.randn(1, channels, rows, cols))
    moved = sampler.sample(shifted, points).reshape(rows, cols, channels)
    still = sampler.sample(memory, reference_grid(rows, cols).unsqueeze(0)).reshape(
        rows, cols, channels)
    # Away from the wrapped column, sampling the shifted memory at the shifted points
    # returns the original memory at the reference points.
    assert torch.allclose(moved[:, : cols - shift], still[:, : cols - shift], atol=1e-5)
    assert not torch.allclose(moved, sampler.sample(shifted, reference_grid(rows, cols)
                                                    .unsqueeze(0)).reshape(rows, cols, channels))


def test_offsets_are_bounded():
    sampler = DeformableSampler(4, (4, 4), offset_range=0.5)
    with torch.no_grad():
        sampler.offset_net[-1].bias.fill_(100.0)
    points = sampler.sample_points(torch.randn(1, 4, 8, 8))
    displacement = points - reference_grid(4, 4).unsqueeze(0)
    assert displacement.abs().max() <= 0.5 * 2 / 4 + 1e-6


def make_memory(batch, frames, layers, channels, height, width, banks=None):
    banks = banks or batch
    long_shape = (batch, frames, layers, channels, height, width)
    short_shape = (batch, 1, layers, channels, height, width)
    return MemoryTensors(torch.randn(long_shape), torch.randn(long_shape),
                         torch.randn(banks, *long_shape[1:]), torch.randn(short_shape),
                         torch.randn(short_shape), torch.randn(banks, *short_shape[1:]))


def test_gradients_reach_the_offset_network():
    torch.manual_seed(3)
    layer = GatedPropagationLayer(16, 2, (3, 4), 2.0, 1, 2)
    memory = make_memory(2, 2, 1, 16, 6, 8)
    x_vis, x_id = torch.randn(2, 48, 16), torch.zeros(2, 48, 16)
    # Zero-initialised last conv: its weight gets gradients through tanh and grid_sample.
    out_vis, out_id, weights = layer(x_vis, x_id, (6, 8), memory, 0)
    (out_vis.square().mean() + out_id.square().mean()).backward()
    grad = layer.sampler.offset_net[-1].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert weights.shape == (2, 2, 48, 2 * 12)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 48), atol=1e-5)


@pytest.mark.parametrize("windowed", [False, True])
def test_local_attention_matches_a_brute_force_window(windowed):
    torch.manual_seed(4)
    batch, channels, height, width, radius, heads = 1, 4, 5, 6, 1, 2
    query = torch.randn(batch, height * width, channels)
    key_map = torch.randn(batch, channels, height, width)
    value_map = torch.randn(batch, channels, height, width)
    weights = local_attention_weights(query, key_map, heads, radius, windowed)
    out = apply_local_weights(weights, value_map, radius, windowed)
    head_dim = channels // heads
    for y, x in [(0, 0), (2, 3), (4, 5)]:
        n = y * width + x
        neighbours = [(yy, xx) for yy in range(y - 1, y + 2) for xx in range(x - 1, x + 2)
                      if 0 <= yy < height and 0 <= xx < width]
        keys = torch.stack([key_map[0, :, yy, xx] for yy, xx in neighbours])
        values = torch.stack([value_map[0, :, yy, xx] for yy, xx in neighbours])
        for head in range(heads):
            part = slice(head * head_dim, (head + 1) * head_dim)
            logits = keys[:, part] @ query[0, n, part] / math.sqrt(head_dim)
            expected = torch.softmax(logits, 0) @ values[:, part]
            assert torch.allclose(out[0, n, part], expected, atol=1e-5)


def test_windowed_and_shifted_local_attention_agree_with_gradients():
    """The GPU path (all windows at once) equals the CPU path, values, banks and gradients."""
    torch.manual_seed(6)
    radius, heads, channels, height, width = 2, 2, 8, 5, 7
    grads = []
    outputs = []
    for windowed in (False, True):
        torch.manual_seed(7)
        query = torch.randn(1, height * width, channels, requires_grad=True)
        key_map = torch.randn(1, channels, height, width, requires_grad=True)
        id_maps = torch.randn(3, channels, height, width, requires_grad=True)  # 3 ID banks
        weights = local_attention_weights(query, key_map, heads, radius, windowed)
        out = apply_local_weights(weights, id_maps, radius, windowed)  # (3, N, C)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([query.grad, key_map.grad, id_maps.grad])
    assert outputs[0].shape == (3, height * width, channels)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    for shifted, windowed in zip(*grads):
        assert torch.allclose(shifted, windowed, atol=1e-4)


def test_identity_banks_share_visual_attention():
    """With one visual batch and three ID banks, each bank equals its own single-bank run."""
    torch.manual_seed(5)
    layer = GatedPropagationLayer(16, 2, (2, 3), 1.0, 1, 2).eval()
    memory = make_memory(1, 2, 1, 16, 4, 6, banks=3)
    x_vis, x_id = torch.randn(1, 24, 16), torch.zeros(3, 24, 16)
    with torch.no_grad():
        _, out_id, _ = layer(x_vis, x_id, (4, 6), memory, 0)
        for bank in range(3):
            single = memory._replace(long_id=memory.long_id[bank:bank + 1],
                                     short_id=memory.short_id[bank:bank + 1])
            _, one, _ = layer(x_vis, x_id[bank:bank + 1], (4, 6), single, 0)
            assert torch.allclose(out_id[bank], one[0], atol=1e-5)


@pytest.mark.parametrize("heads", [1, 2])
def test_dense_local_attention_in_inference_equals_the_windowed_path(monkeypatch, heads):
    """On a CPU in inference the short-term window is one masked N x N product: same outputs."""
    torch.manual_seed(8)
    layer = GatedPropagationLayer(16, heads, (2, 3), 1.0, 2, 2).eval()
    memory = make_memory(1, 2, 1, 16, 5, 7, banks=3)
    x_vis, x_id = torch.randn(1, 35, 16), torch.randn(3, 35, 16)
    with torch.no_grad():
        assert use_dense_local(memory.short_key[:, 0, 0])
        dense = layer(x_vis, x_id, (5, 7), memory, 0)
        monkeypatch.setattr(attention, "DENSE_LOCAL_MAX_TOKENS", 0)
        assert not use_dense_local(memory.short_key[:, 0, 0])
        windowed = layer(x_vis, x_id, (5, 7), memory, 0)
    for got, expected in zip(dense, windowed):
        assert torch.allclose(got, expected, atol=1e-5)
    monkeypatch.undo()
    assert not use_dense_local(memory.short_key[:, 0, 0])  # grad enabled (training): windows


@pytest.mark.parametrize("heads", [1, 4])
def test_attention_weights_rows_sum_to_one(heads):
    weights = attention_weights(torch.randn(2, 7, 8), torch.randn(2, 9, 8), heads)
    assert weights.shape == (2, heads, 7, 9)
    assert torch.allclose(weights.sum(-1), torch.ones(2, heads, 7), atol=1e-6)


def test_recorded_offsets_measure_a_known_shift_and_zero_when_untrained():
    from defvos_core.config import student_config
    from defvos_core.evaluation.offsets import offset_statistics, record_offsets
    from defvos_core.model.vos_model import VOSModel

    model = VOSModel(student_config(pretrained_encoder=False, embed_dim=16, decoder_dim=16,
                                    sample_grid=(2, 4), offset_range=2.0)).eval()
    sampler = model.propagation.layers[0].sampler
    query = torch.randn(1, 16, 6, 12)  # 6 x 12 features: a grid cell is 3 feature cells
    with torch.no_grad(), record_offsets(model) as records:
        sampler.sample_points(query)  # untrained: offsets start at zero
        sampler.offset_net[-1].bias.copy_(torch.tensor([math.atanh(0.5), 0.0]))
        sampler.sample_points(query)  # tanh(atanh(0.5)) * 2 = one cell along x everywhere
    zero, shifted = (offset_statistics([[r]], 2.0)[0] for r in records[0])
    assert zero.mean_cells == 0.0 and zero.moved_fraction == 0.0 and zero.points == 8
    assert shifted.mean_cells == pytest.approx(1.0, abs=1e-5)
    assert shifted.max_cells == pytest.approx(1.0, abs=1e-5)
    assert shifted.mean_features == pytest.approx(3.0, abs=1e-4)
    assert shifted.moved_fraction == 1.0
    assert "sample_points" not in vars(sampler)  # the recorder is gone after the block
