"""Frames of many sizes share a few processing shapes; camera sizes keep theirs."""

from __future__ import annotations

import math
import os
from unittest import mock

import numpy as np
import pytest
from tracker_helpers import box_seed, make_tracker, random_frame

from defvos_core.benchmarks.frame_sizes import frame_sizes
from defvos_core.inference import native_memory, tracker as tracker_module
from defvos_core.inference.preprocess import (ASPECT_STEPS, FREE_SHORT_STEP, STRIDE,
                                              FrameGeometry)


def max_shapes(size: int) -> int:
    """Return the bound of processing shapes at processing size `size`.

    The steps, and the padded short sides of frames so elongated that `max_long_side`
    shrinks them (below `size`), in either orientation.
    """
    return 2 * (len(ASPECT_STEPS) + math.ceil(size / FREE_SHORT_STEP))


@pytest.mark.parametrize("size", [240, 360, 480])
def test_random_sizes_share_a_bounded_set_of_processing_shapes(size):
    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(3000):
        height, width = (int(side) for side in rng.integers(8, 4000, 2))
        if max(height, width) > 8 * min(height, width):
            continue
        geometry = FrameGeometry.for_input(height, width, size, 1280)
        assert all(p >= r and p % STRIDE == 0 for p, r in zip(geometry.padded, geometry.resized))
        shapes.add(geometry.padded)
    assert len(shapes) <= max_shapes(size), sorted(shapes)


@pytest.mark.parametrize("height, width, padded", [
    (480, 640, (240, 320)), (720, 1280, (240, 432)), (1080, 1920, (240, 432)),
    (480, 854, (240, 432)), (720, 720, (240, 240)), (400, 600, (240, 368)),
    (1080, 2560, (240, 576)), (640, 480, (320, 240)), (1280, 720, (432, 240))])
def test_camera_sizes_keep_the_shape_padded_to_the_stride(height, width, padded):
    """4:3, 16:9, 3:2, 21:9, 1:1 and portrait: as before, so accuracy is as measured."""
    geometry = FrameGeometry.for_input(height, width, 240, 1280)
    assert geometry.padded == padded
    assert padded == tuple(-(-side // STRIDE) * STRIDE for side in geometry.resized)


def test_a_tracker_fed_many_sizes_sees_few_shapes_and_answers_at_each_size():
    """The bench's frame sizes through a tracker at size 64: masks at the input size."""
    tracker = make_tracker(size=64, max_long_side=320)
    shapes = set()
    released = []
    with mock.patch.object(tracker_module, "release_free_memory",
                           side_effect=lambda: released.append(1)):
        for index, (height, width) in enumerate(frame_sizes(30)):
            height, width = max(16, height // 8), max(16, width // 8)  # small
            if max(height, width) > 8 * min(height, width):
                continue
            tracker.reset()
            side = min(height, width) // 3
            seed = box_seed(height, width, 1, height // 4, width // 4, size=side)
            assert tracker.add_objects(random_frame(height, width, index), seed).labels.shape \
                == (height, width)
            assert tracker.step(random_frame(height, width, index + 1)).labels.shape \
                == (height, width)
            shapes.add(tracker.geometry.padded)
        count = len(released)
        for _ in range(3):  # one size from now on: nothing more to release
            tracker.step(random_frame(height, width, 99))
    assert len(shapes) <= max_shapes(64)
    assert count >= 25 and len(released) == count  # once per size change, never per frame


def test_release_free_memory_runs_where_glibc_has_it():
    assert native_memory.release_free_memory() == (native_memory._malloc_trim() is not None)


def test_the_kernel_cache_is_bounded_unless_the_environment_says(monkeypatch):
    for name in native_memory.KERNEL_CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert native_memory.bound_kernel_cache(128)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "128"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "2048")  # the user's choice stays
    assert not native_memory.bound_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "2048"
