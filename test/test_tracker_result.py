"""The result at the input size: the same labels as upsampling every channel, in bounded memory."""

import weakref

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig
from defvos_core.inference.preprocess import (
    channel_argmax,
    FrameGeometry,
    input_labels,
    probabilities_to_input,
)
from defvos_core.inference.tracker import Tracker
from tracker_helpers import make_tracker, random_frame, sample_clip

torch.set_num_threads(1)


def reference_result(probabilities, geometry, object_ids, own_bank=None):
    """Return the result as the tracker computed it before: all channels upsampled at once.

    own_bank (K, h4, w4): the probabilities the confidence is taken from (default: merged).
    """
    full = probabilities_to_input(probabilities, geometry)  # (K+1, H, W)
    scores = full if own_bank is None else \
        torch.cat([full[:1], probabilities_to_input(own_bank, geometry)])
    best = full.argmax(dim=0)
    labels = torch.tensor([0] + object_ids, dtype=torch.uint8)[best]
    confidence, area = {}, {}
    for row, object_id in enumerate(object_ids, start=1):
        selected = best == row
        area[object_id] = int(selected.sum())
        confidence[object_id] = float(scores[row][selected].mean()) if area[object_id] else 0.0
    return labels.numpy(), confidence, area


class ComparingTracker(Tracker):
    """Records, for every result, the fraction of pixels equal to `reference_result`."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__(tracker.backend, tracker.config)
        self.equal_fractions: list[float] = []

    def _result(self, probabilities, return_probabilities=False, own_bank=None):
        result = super()._result(probabilities, return_probabilities, own_bank)
        labels, confidence, area = reference_result(probabilities, self.geometry,
                                                    self.object_ids, own_bank)
        one_channel_chunks, _ = input_labels(probabilities, self.geometry, chunk_bytes=1)
        lookup = torch.tensor([0] + self.object_ids, dtype=torch.uint8)
        assert np.array_equal(lookup[one_channel_chunks].numpy(), result.labels)
        self.equal_fractions.append(float((labels == result.labels).mean()))
        for object_id in self.object_ids:
            assert abs(result.area[object_id] - area[object_id]) <= 1e-3 * labels.size
            assert result.confidence[object_id] == pytest.approx(confidence[object_id], abs=1e-3)
        return result


@pytest.mark.parametrize("objects, size", [(1, 240), (5, 160)])
def test_labels_match_upsampling_every_channel_on_the_sample_clip(objects, size):
    frames, truths = sample_clip()
    seed = (truths[0] == 1).astype(np.int64)
    for object_id in range(2, objects + 1):  # boxes on the wall and the ground
        top = 10 if object_id % 2 else 200
        seed[top:top + 30, 60 * object_id:60 * object_id + 40] = object_id
    tracker = ComparingTracker(build_tracker(config=TrackerConfig(size=size)))
    tracker.add_objects(frames[0], seed)
    for frame in frames[1:8]:
        tracker.step(frame)
    assert min(tracker.equal_fractions) >= 0.999
    print(f"{objects} objects: equal pixels {min(tracker.equal_fractions):.6f} (worst frame)")


class PeakTensorBytes(TorchDispatchMode):
    """Peak bytes held at once by the tensors that ops return while this mode is active.

    Storages that exist before (inputs) are not counted; a storage is freed when the last
    tensor seen holding it is garbage. Scratch memory inside one op is not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.holders: dict[int, int] = {}  # storage address -> live tensors seen holding it
        self.sizes: dict[int, int] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            address = storage.data_ptr()
            if address == 0 or (address in inputs and address not in self.holders):
                continue
            if address not in self.holders:
                self.holders[address] = 0
                self.sizes[address] = storage.nbytes()
                self.now += storage.nbytes()
                self.peak = max(self.peak, self.now)
            self.holders[address] += 1
            weakref.finalize(tensor, self._release, address)
        return out

    def _release(self, address: int) -> None:
        self.holders[address] -= 1
        if not self.holders[address]:
            del self.holders[address]
            self.now -= self.sizes.pop(address)


def test_result_memory_grows_with_the_input_size_not_objects_times_it():
    objects, height, width = 50, 1080, 1920
    bound = 150 * 2**20  # all 51 channels at once: 51 x 1080 x 1920 x 4 bytes = 423 MB
    seed = np.zeros((height, width), np.int64)
    for index in range(objects):
        row, column = divmod(index, 10)
        seed[40 + row * 200:100 + row * 200, 40 + column * 190:100 + column * 190] = index + 1
    tracker = make_tracker(size=240)
    frame = random_frame(height, width)
    tracker.add_objects(frame, seed)
    with PeakTensorBytes() as step_meter:
        result = tracker.step(frame)
    assert result.labels.shape == (height, width) and len(result.object_ids) == objects
    probabilities = torch.softmax(torch.randn(objects + 1, 60, 108), dim=0)
    geometry = FrameGeometry.for_input(height, width, 240, 1280)
    with PeakTensorBytes() as reference_meter:
        reference_result(probabilities, geometry, list(range(1, objects + 1)))
    print(f"peak tensor bytes, {objects} objects at {height}x{width}: step "
          f"{step_meter.peak / 2**20:.0f} MiB, all channels at once "
          f"{reference_meter.peak / 2**20:.0f} MiB")
    assert reference_meter.peak > bound  # the meter sees the old path's cost
    assert step_meter.peak < bound


@pytest.mark.parametrize("channels, chunk", [(1, 1), (2, 1), (16, 1), (16, 5), (16, 16)])
def test_channel_argmax_equals_torch_argmax_including_ties(channels, chunk):
    scores = torch.rand(channels, 30, 40)
    scores[:, :5, :5] = 0.25  # ties take the first channel, as argmax does
    scores[-1, 10:20, 10:20] = 2.0
    best, value = channel_argmax(scores[start:start + chunk]
                                 for start in range(0, channels, chunk))
    assert torch.equal(best, scores.argmax(dim=0))
    assert torch.equal(value, scores.max(dim=0).values)
