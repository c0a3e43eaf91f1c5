"""bfloat16 inference with the torch backend: settings, sampling, and the same tracking."""

import numpy as np
import pytest
import torch

from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig
from defvos_core.model.attention import DeformableSampler
from tracker_helpers import iou, sample_clip

torch.set_num_threads(2)


@pytest.mark.parametrize("options, message", [
    (dict(fp16=True, bf16=True), "exclusive"),
    (dict(bf16=True, backend="onnxruntime"), "torch backend only"),
])
def test_bad_precision_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        TrackerConfig(**options)


def test_bf16_sampling_matches_float32():
    torch.manual_seed(0)
    maps, points = torch.randn(2, 3, 8, 5, 7), torch.rand(1, 2, 3, 2) * 2.2 - 1.1
    expected = DeformableSampler.sample(maps, points)
    sampled = DeformableSampler.sample(maps.bfloat16(), points.bfloat16())
    assert sampled.dtype == torch.bfloat16 and sampled.shape == expected.shape
    assert torch.allclose(sampled.float(), expected, atol=0.05)


def test_bf16_tracker_keeps_a_bf16_memory_and_follows_the_bear_like_float32():
    frames, truths = sample_clip()
    masks = {}
    for bf16 in (False, True):
        tracker = build_tracker(config=TrackerConfig(bf16=bf16))
        tracker.add_objects(frames[0], truths[0])
        masks[bf16] = [tracker.step(frames[index]).labels for index in range(1, 9)]
        dtypes = {tensor.dtype for tensor in tracker.memory.tensors()}
        assert dtypes == {torch.bfloat16 if bf16 else torch.float32}
    for index, (full, reduced) in enumerate(zip(masks[False], masks[True]), start=1):
        assert iou(reduced == 1, truths[index] == 1) >= 0.8, index
        assert iou(reduced == 1, full == 1) >= 0.95, index


def test_bf16_box_seed_uses_the_prompt_head():
    frames, truths = sample_clip()
    rows, cols = np.nonzero(truths[0] == 1)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    tracker = build_tracker(config=TrackerConfig(bf16=True))
    result = tracker.add_objects(frames[0], boxes={1: box})
    assert iou(result.labels == 1, truths[0] == 1) >= 0.7
    assert iou(tracker.step(frames[1]).labels == 1, truths[1] == 1) >= 0.7


def test_bf16_tracker_resizes_frames_of_another_size():
    frames, truths = sample_clip()
    tracker = build_tracker(config=TrackerConfig(bf16=True, size=160))  # 240p input, downscaled
    tracker.add_objects(frames[0], truths[0])
    result = tracker.step(frames[1])
    assert result.labels.shape == truths[1].shape
    assert iou(result.labels == 1, truths[1] == 1) >= 0.7
