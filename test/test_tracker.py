"""The inference engine: objects in and out mid-stream, bounded memory, sizes, odd seeds.

More in test_tracker_banks (many objects), test_tracker_atomic (failures half-way) and
test_tracker_result (the result at the input size).
"""

import cv2
import numpy as np
import pytest
import torch

from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig
from defvos_core.errors import FrameError
from defvos_core.inference.preprocess import FrameGeometry, seed_to_stride4
from defvos_core.inference.tracker import Tracker
from tracker_helpers import (box_seed, iou, make_tracker, random_frame, sample_clip,
                             ShiftingOracle)

torch.set_num_threads(1)


def test_the_shipped_student_follows_the_bear():
    frames, truths = sample_clip()
    tracker = build_tracker()
    tracker.add_objects(frames[0], truths[0])
    for index in range(1, 11):
        result = tracker.step(frames[index])
        assert iou(result.labels == 1, truths[index] == 1) >= 0.8, index
    again = build_tracker()  # segmenting the seed frame itself from the seed's memory
    again.add_objects(frames[0], truths[0])
    assert iou(again.step(frames[0]).labels == 1, truths[0] == 1) >= 0.85


def test_steps_keep_size_and_ids():
    tracker = make_tracker()
    seed = box_seed(48, 64, 3, 10, 20)
    result = tracker.add_objects(random_frame(), seed)
    assert result.object_ids == [3] and result.tiny_objects == []
    result = tracker.step(random_frame(seed=1), return_probabilities=True)
    assert result.labels.shape == (48, 64) and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 3}
    assert result.probabilities.shape == (1, 48, 64)
    assert 0.0 <= result.confidence[3] <= 1.0
    assert result.frame_index == 1


def test_objects_added_mid_stream_keep_the_others_tracked():
    tracker = make_tracker()
    tracker.add_objects(random_frame(), box_seed(48, 64, 1, 2, 2))
    tracker.step(random_frame(seed=1))
    result = tracker.add_objects(random_frame(seed=2), box_seed(48, 64, 2, 30, 40))
    assert tracker.object_ids == [1, 2]
    assert len(tracker.memory.seeds) == 2
    assert (result.labels[30:42, 40:52] == 2).all()
    assert tracker.step(random_frame(seed=3)).object_ids == [1, 2]


def test_replacing_an_object_drops_its_old_seed_and_uses_the_new_mask():
    tracker = make_tracker(mem_every=1)
    tracker.add_objects(random_frame(), box_seed(48, 64, 1, 2, 2))
    tracker.step(random_frame(seed=1))
    result = tracker.add_objects(random_frame(seed=2), box_seed(48, 64, 1, 30, 40))
    assert len(tracker.memory.seeds) == 1  # the first seed no longer introduces any object
    assert (result.labels == 1).sum() == 144 and (result.labels[30:42, 40:52] == 1).all()
    # The replaced object's slot is erased from older memory masks.
    older = [f for f in tracker.memory.frames() if f is not tracker.memory.seeds[-1]]
    assert older and all(frame.mask[0, 1].max() == 0 for frame in older)


def test_remove_object_and_reset():
    tracker = make_tracker(slots_per_bank=0)  # one bank: objects 1 and 2 in its slots 1 and 2
    seed = box_seed(48, 64, 1, 2, 2) + box_seed(48, 64, 2, 30, 40)
    tracker.add_objects(random_frame(), seed)
    tracker.remove_object(1)
    assert tracker.object_ids == [2]
    assert all(f.mask[0, 1].max() == 0 for f in tracker.memory.frames())
    assert set(np.unique(tracker.step(random_frame(seed=1)).labels)) <= {0, 2}
    with pytest.raises(KeyError, match="object 7 is not tracked"):
        tracker.remove_object(7)
    tracker.remove_object(2)
    assert tracker.memory.empty
    assert tracker.step(random_frame(seed=2)).object_ids == []
    tracker.add_objects(random_frame(), seed)
    tracker.reset()
    assert tracker.object_ids == [] and tracker.memory.empty


def test_memory_frames_count_the_seeds_the_fifo_and_the_last_frame():
    tracker = make_tracker(mem_every=3, max_memory_frames=4, max_seed_frames=2)
    frame = random_frame(32, 32)
    assert tracker.memory_frames() == 0
    tracker.add_objects(frame, box_seed(32, 32, 1, 4, 4, size=8))
    assert tracker.memory_frames() == 2  # the seed, which is also the last frame
    for _ in range(3):
        tracker.step(frame)
    assert tracker.memory_frames() == 3  # every 3rd frame joins the FIFO
    for _ in range(30):
        tracker.step(frame)
    assert tracker.memory_frames() == 1 + 4 + 1  # the FIFO stays at its bound
    tracker.reset()
    assert tracker.memory_frames() == 0


def test_memory_is_bounded_over_two_thousand_frames():
    tracker = make_tracker(mem_every=3, max_memory_frames=4, max_seed_frames=2)
    frame = random_frame(32, 32)
    tracker.add_objects(frame, box_seed(32, 32, 1, 4, 4, size=8))
    early, late = [], []
    for index in range(2000):
        tracker.step(frame)
        window = early if 100 <= index < 200 else late if index >= 1900 else None
        if window is not None:
            window.append((tracker.memory_bytes(), tuple(tracker.memory.tensors().long_key.shape)))
    # The short-term frame is sometimes also a FIFO frame, so bytes alternate within a
    # window; the largest footprint and the memory's shape stop growing.
    assert max(early) == max(late)
    assert {shape for _, shape in late} == {(1, 1 + 4, 1, 32, 2, 2)}  # a seed + the FIFO bound
    print(f"memory after 2000 frames: {max(late)[0] / 1e3:.1f} kB")


def test_arbitrary_input_and_processing_sizes():
    tracker = make_tracker(size=None)
    result = tracker.add_objects(random_frame(37, 53), box_seed(37, 53, 1, 5, 5))
    assert result.labels.shape == (37, 53)
    assert tracker.geometry.padded == (48, 64)
    assert tracker.step(random_frame(37, 53)).labels.shape == (37, 53)
    tracker = make_tracker(size=32)
    tracker.add_objects(random_frame(100, 150), box_seed(100, 150, 1, 10, 10, size=40))
    assert tracker.geometry.resized == (32, 48)
    assert tracker.step(random_frame(100, 150)).labels.shape == (100, 150)


def test_bad_input_gives_clear_errors():
    tracker = make_tracker()
    frame = random_frame()
    with pytest.raises(ValueError, match="but its frame is 64x48"):
        tracker.add_objects(frame, np.ones((10, 10), np.int64))
    with pytest.raises(ValueError, match="no object"):
        tracker.add_objects(frame, np.zeros((48, 64), np.int64))
    with pytest.raises(ValueError, match="1..254"):
        tracker.add_objects(frame, box_seed(48, 64, 300, 0, 0))
    with pytest.raises(ValueError, match="uint8 RGB"):
        tracker.add_objects(frame.astype(np.float32), box_seed(48, 64, 1, 0, 0))
    tracker.add_objects(frame, box_seed(48, 64, 1, 0, 0))
    with pytest.raises(ValueError, match="frame size changed"):
        tracker.step(random_frame(40, 64))
    assert tracker.step(frame).object_ids == [1]  # still usable after the rejected frame


def test_extreme_aspect_ratios_are_refused_as_frame_shape():
    tracker = make_tracker(size=240)  # the default max_aspect_ratio: 8
    for height, width in ((100, 1), (1, 100), (10, 200)):
        with pytest.raises(FrameError) as error:
            tracker.add_objects(random_frame(height, width), np.ones((height, width), np.int64))
        assert error.value.kind == "frame_shape"
        assert f"frame is {width}x{height}" in str(error.value) and "8:1" in str(error.value)
        with pytest.raises(FrameError, match="aspect ratio"):
            tracker.step(random_frame(height, width))
    assert tracker.object_ids == [] and tracker.frame_index == -1
    result = tracker.add_objects(random_frame(16, 128), box_seed(16, 128, 1, 4, 4, size=8))
    assert result.labels.shape == (16, 128)  # 8:1 is accepted


def test_the_processing_long_side_is_bounded():
    tracker = make_tracker(size=240)  # the default max_long_side: 1280
    tracker.add_objects(random_frame(100, 800), box_seed(100, 800, 1, 30, 30, size=40))
    assert tracker.geometry.resized == (160, 1280)  # not 240x1920: the short side shrinks
    assert tracker.step(random_frame(100, 800)).labels.shape == (100, 800)
    tracker = make_tracker(size=None, max_long_side=64)
    tracker.add_objects(random_frame(48, 128), box_seed(48, 128, 1, 10, 10))
    assert tracker.geometry.resized == (24, 64) and tracker.geometry.padded == (32, 64)
    assert FrameGeometry.for_input(480, 640, 240, 1280).resized == (240, 320)  # unchanged


@pytest.mark.parametrize("height, width", [(240, 320), (960, 1280)])
def test_a_two_pixel_object_keeps_a_cell_at_the_finest_scale(height, width):
    # The oracle moves every stored mask one stride-4 cell right per frame: an object whose
    # seed wins no cell (a quarter of one at 240p; nothing once 960p is resized) is lost.
    tracker = Tracker(ShiftingOracle(shift=4), TrackerConfig(size=240))
    scale = height // 240
    seed = box_seed(height, width, 1, 40 * scale, 40 * scale, size=40 * scale)
    top, left = 120 * scale + 1, 160 * scale + 1
    seed[top:top + 2, left:left + 2] = 2
    result = tracker.add_objects(random_frame(height, width), seed)
    assert result.tiny_objects == [2] and result.area[2] == 4
    result = tracker.step(random_frame(height, width))
    assert result.area[2] >= 4 * scale ** 2
    rows, columns = np.nonzero(result.labels == 2)
    cell = 4 * scale  # the cell of the object, moved by one cell
    assert abs(rows.mean() - (top // cell + 0.5) * cell) <= cell
    assert abs(columns.mean() - (left // cell + 1.5) * cell) <= cell


def test_tiny_objects_sharing_a_cell_share_its_probability():
    seed = np.zeros((32, 32), np.int64)
    seed[5, 5], seed[6, 6] = 1, 2  # both in cell (1, 1)
    seed[16:32, 16:32] = 3
    masks, tiny = seed_to_stride4(seed, [1, 2, 3], FrameGeometry.for_input(32, 32, None, 1280))
    assert tiny == [1, 2]
    assert masks[0, 1, 1] == masks[1, 1, 1] == 0.5 and masks[2, 4:, 4:].min() == 1
    assert masks.sum(0).max() <= 1


def test_void_seed_pixels_are_tracked_as_background():
    frames, truths = sample_clip()
    bear = (truths[0] == 1).astype(np.uint8)
    seed = bear.copy()
    seed[(cv2.dilate(bear, np.ones((9, 9), np.uint8)) > 0) & (bear == 0)] = 255  # DAVIS-style
    seed[10:60, 300:400] = 255
    void = seed == 255
    runs = []
    for label_map in (seed, np.where(void, 0, seed)):
        tracker = build_tracker()
        labels = [tracker.add_objects(frames[0], label_map).labels]
        labels += [tracker.step(frame).labels for frame in frames[1:5]]
        runs.append(labels)
    assert not runs[0][0][void].any() and runs[0][0].max() == 1
    assert all(np.array_equal(a, b) for a, b in zip(*runs))  # 255 is background, exactly
