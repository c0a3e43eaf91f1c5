"""The inference engine: objects in and out mid-stream, many objects, bounded memory, sizes."""

import numpy as np
import pytest
import torch

from defvos_core.config import TrackerConfig, student_config
from defvos_core.inference.backend import TorchBackend
from defvos_core.inference.tracker import Tracker
from defvos_core.model.vos_model import VOSModel

torch.set_num_threads(1)


def tiny_model(max_objects=10):
    torch.manual_seed(0)
    config = student_config(pretrained_encoder=False, embed_dim=32, decoder_dim=16,
                            sample_grid=(2, 3), short_term_radius=1, max_objects=max_objects)
    return VOSModel(config)


def make_tracker(max_objects=10, **tracker_options):
    options = dict(size=None, mem_every=2, max_memory_frames=3, max_seed_frames=2)
    options.update(tracker_options)
    return Tracker(TorchBackend(tiny_model(max_objects)), TrackerConfig(**options))


def random_frame(height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def box_seed(height, width, object_id, top, left, size=12):
    seed = np.zeros((height, width), np.int64)
    seed[top:top + size, left:left + size] = object_id
    return seed


def test_seed_frame_result_is_the_seed_and_steps_keep_size_and_ids():
    tracker = make_tracker()
    seed = box_seed(48, 64, 3, 10, 20)
    result = tracker.add_objects(random_frame(), seed)
    assert np.array_equal(result.labels, seed.astype(np.uint8))
    assert result.object_ids == [3] and result.area[3] == 144
    result = tracker.step(random_frame(seed=1), return_probabilities=True)
    assert result.labels.shape == (48, 64) and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 3}
    assert result.probabilities.shape == (1, 48, 64)
    assert 0.0 <= result.confidence[3] <= 1.0
    assert result.frame_index == 1


def test_fifteen_objects_use_two_identity_banks():
    tracker = make_tracker(max_objects=10)
    seed = np.zeros((48, 90), np.int64)
    for k in range(15):
        seed[:, k * 6:(k + 1) * 6] = k + 1
    result = tracker.add_objects(random_frame(48, 90), seed)
    assert np.array_equal(result.labels, seed)
    assert tracker.objects.num_banks == 2
    assert tracker.memory.tensors().long_id.shape[0] == 2
    result = tracker.step(random_frame(48, 90, seed=1), return_probabilities=True)
    assert result.object_ids == list(range(1, 16))
    assert result.probabilities.shape == (15, 48, 90)
    assert (result.probabilities.sum(0) <= 1 + 1e-4).all()
    assert set(np.unique(result.labels)) <= set(range(16))


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
    tracker = make_tracker()
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


@pytest.mark.parametrize("channels", [1, 2, 16])
def test_channel_argmax_equals_torch_argmax_including_ties(channels):
    from defvos_core.inference.tracker import channel_argmax

    scores = torch.rand(channels, 30, 40)
    scores[:, :5, :5] = 0.25  # ties take the first channel, as argmax does
    scores[-1, 10:20, 10:20] = 2.0
    assert torch.equal(channel_argmax(scores), scores.argmax(dim=0))
