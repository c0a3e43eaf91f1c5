"""All or nothing: a call failing half-way (say, out of memory) leaves the tracker as it was."""

import numpy as np
import pytest
import torch

from defvos_core.config import TrackerConfig
from defvos_core.inference.backend import TorchBackend
from defvos_core.inference.tracker import Tracker
from tracker_helpers import random_frame, SpyBackend, tiny_model

torch.set_num_threads(1)


def objects_seed(object_ids, shift: int = 0) -> np.ndarray:
    """8x8 boxes on a 48x64 frame, one per id on a 4-column grid."""
    seed = np.zeros((48, 64), np.int64)
    for object_id in object_ids:
        row, column = divmod(object_id - 1, 4)
        top, left = row * 12 + shift, column * 16 + shift
        seed[top:top + 8, left:left + 8] = object_id
    return seed


def tracked(count: int) -> tuple[Tracker, SpyBackend]:
    """Return a tracker of `count` objects (0: an empty one) after a seed and three frames."""
    spy = SpyBackend(TorchBackend(tiny_model()))
    tracker = Tracker(spy, TrackerConfig(size=None, mem_every=2, max_memory_frames=3,
                                         max_seed_frames=2))
    if count:
        tracker.add_objects(random_frame(), objects_seed(range(1, count + 1)))
        for index in range(1, 4):
            tracker.step(random_frame(seed=index))
    return tracker, spy


def state(tracker: Tracker) -> dict:
    """Return everything a call may change: slots, banks, memory entries, frame counter."""
    memory = tracker.memory
    held = memory.frames() + ([memory.short] if memory.short is not None else [])
    return {
        "slots": {i: tracker.objects.slot_of(i) for i in tracker.object_ids},
        "banks": tracker.objects.num_banks,
        "frame_index": tracker.frame_index,
        "geometry": tracker.geometry,
        "frames": [(frame, frame.mask.clone(), frame.identity.clone(), set(frame.object_ids))
                   for frame in held],
        "seeds": list(memory.seeds),
        "tensors": None if memory.empty else [t.clone() for t in memory.tensors()],
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert after["slots"] == before["slots"]
    assert (after["banks"], after["frame_index"]) == (before["banks"], before["frame_index"])
    assert after["geometry"] == before["geometry"]
    assert len(after["frames"]) == len(before["frames"])
    for (frame, mask, identity, ids), (frame_after, mask_after, identity_after, ids_after) in zip(
            before["frames"], after["frames"]):
        assert frame_after is frame and ids_after == ids
        assert torch.equal(mask_after, mask) and torch.equal(identity_after, identity)
    assert [a is b for a, b in zip(after["seeds"], before["seeds"])] == [True] * len(
        before["seeds"]) and len(after["seeds"]) == len(before["seeds"])
    if before["tensors"] is None:
        assert after["tensors"] is None
    else:
        assert all(torch.equal(a, b) for a, b in zip(after["tensors"], before["tensors"]))


OPERATIONS = {  # name: (objects tracked before, the call)
    "first seed": (0, lambda t: t.add_objects(random_frame(seed=7), objects_seed([1, 2]))),
    "add opening a bank": (10, lambda t: t.add_objects(random_frame(seed=7), objects_seed([11]))),
    "replace objects": (10, lambda t: t.add_objects(random_frame(seed=7),
                                                    objects_seed([3, 4], shift=2))),
    "remove, compacting": (11, lambda t: t.remove_object(2)),
    "step": (10, lambda t: t.step(random_frame(seed=7))),
}


@pytest.mark.parametrize("name", OPERATIONS)
def test_a_call_failing_at_any_backend_call_changes_nothing(name):
    count, call = OPERATIONS[name]
    twin, twin_spy = tracked(count)
    twin_spy.calls.clear()
    expected = call(twin)
    backend_calls = len(twin_spy.calls)
    assert backend_calls >= 1

    tracker, spy = tracked(count)
    before = state(tracker)
    for fail_at in range(1, backend_calls + 1):  # fail each backend call of the call in turn
        spy.calls.clear()
        spy.fail_at = fail_at
        with pytest.raises(RuntimeError, match="out of memory"):
            call(tracker)
        assert_same_state(before, state(tracker))
    spy.fail_at = None
    result = call(tracker)  # now it succeeds, exactly as it does on a tracker that never failed
    if expected is not None:
        assert np.array_equal(result.labels, expected.labels)
        assert result.frame_index == expected.frame_index
    assert np.array_equal(tracker.step(random_frame(seed=8)).labels,
                          twin.step(random_frame(seed=8)).labels)


def test_bad_input_changes_nothing_either():
    tracker, _ = tracked(3)
    before = state(tracker)
    with pytest.raises(ValueError, match="1..254"):
        tracker.add_objects(random_frame(seed=7), np.full((48, 64), 300))
    with pytest.raises(ValueError, match="frame size changed"):
        tracker.step(random_frame(40, 64))
    assert_same_state(before, state(tracker))
