"""Identity banks: each id keeps its own region, and the bank count follows the objects.

Removals compact the banks instead of paying for the most objects ever tracked.
"""

import math

import numpy as np
import pytest
import torch

from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig
from defvos_core.inference.objects import ObjectManager, background_from_objects
from defvos_core.inference.tracker import Tracker
from tracker_helpers import iou, random_frame, sample_clip, ShiftingOracle, SpyBackend

torch.set_num_threads(1)
STRIP = 16  # the oracle tests' objects: 12-pixel strips every 16 pixels, moving 4 px a frame


def strip_seed(columns: dict[int, int], moved: int, height: int = 64,
               width: int = 400) -> np.ndarray:
    """Label map of object id -> strip column, the scene moved right by `moved` pixels."""
    seed = np.zeros((height, width), np.int64)
    for object_id, column in columns.items():
        seed[8:height - 8, column * STRIP:column * STRIP + 12] = object_id
    return np.roll(seed, moved, axis=1)


def oracle_tracker(slots_per_bank: int = 10) -> tuple[Tracker, SpyBackend]:
    spy = SpyBackend(ShiftingOracle(shift=4))
    config = TrackerConfig(size=None, mem_every=2, max_memory_frames=3, max_seed_frames=2,
                           slots_per_bank=slots_per_bank)
    return Tracker(spy, config), spy


def assert_ids_follow(result, columns: dict[int, int], moved: int) -> None:
    expected = strip_seed(columns, moved)
    assert result.object_ids == sorted(columns)
    for object_id in columns:
        assert iou(result.labels == object_id, expected == object_id) >= 0.95, object_id


def test_fifteen_ids_each_follow_their_own_region_through_removals_and_adds():
    tracker, spy = oracle_tracker()
    columns = {object_id: object_id - 1 for object_id in range(1, 16)}
    moved = 0
    tracker.add_objects(random_frame(64, 400), strip_seed(columns, moved))
    for _ in range(3):
        moved += 4
        assert_ids_follow(tracker.step(random_frame(64, 400)), columns, moved)
    assert spy.logit_banks[-1] == 2
    for object_id in range(1, 6):  # the first bank's first five: 11..15 move into bank 0
        tracker.remove_object(object_id)
        del columns[object_id]
    for _ in range(3):
        moved += 4
        assert_ids_follow(tracker.step(random_frame(64, 400)), columns, moved)
    assert spy.logit_banks[-1] == 1 and tracker.memory.tensors().long_id.shape[0] == 1
    new = {20 + column: column for column in range(5)}  # on the freed strips
    columns.update(new)
    moved += 4
    assert_ids_follow(tracker.add_objects(random_frame(64, 400), strip_seed(new, moved)),
                      columns, moved)
    for _ in range(3):
        moved += 4
        assert_ids_follow(tracker.step(random_frame(64, 400)), columns, moved)
    assert spy.logit_banks[-1] == 2


@pytest.mark.parametrize("count, removed", [
    (15, range(11, 16)),  # the whole last bank
    (15, range(1, 6)),  # five of the first bank: the last bank's objects move
    (15, [2, 4, 6, 8, 10, 12, 14]),
    (25, range(3, 16)),  # three banks -> two
    (15, range(1, 16)),  # all of them; then one new object
])
def test_bank_count_after_removals_is_objects_over_slots_rounded_up(count, removed):
    tracker, spy = oracle_tracker()
    columns = {object_id: object_id - 1 for object_id in range(1, count + 1)}
    tracker.add_objects(random_frame(64, 400), strip_seed(columns, 0))
    moved = 4
    tracker.step(random_frame(64, 400))
    assert spy.logit_banks[-1] == math.ceil(count / 10)
    for object_id in removed:
        tracker.remove_object(object_id)
        del columns[object_id]
    banks = math.ceil(len(columns) / 10)
    assert tracker.objects.num_banks == banks
    if not columns:
        assert tracker.memory.empty
        columns = {99: 3}
        moved += 4
        tracker.add_objects(random_frame(64, 400), strip_seed(columns, moved))
        banks = 1
    else:
        assert tracker.memory.tensors().long_id.shape[0] == banks
        assert {frame.mask.shape[0] for frame in tracker.memory.frames()} == {banks}
    moved += 4
    assert_ids_follow(tracker.step(random_frame(64, 400)), columns, moved)
    assert spy.logit_banks[-1] == banks


# ------------------------------------------------------------------------ slots_per_bank
def test_slots_per_bank_is_bounded_by_the_model_and_zero_means_all_slots():
    assert TrackerConfig(slots_per_bank=0).bank_slots(10) == 10
    assert TrackerConfig(slots_per_bank=3).bank_slots(10) == 3
    assert TrackerConfig(slots_per_bank=30).bank_slots(10) == 10
    with pytest.raises(ValueError, match="slots_per_bank"):
        TrackerConfig(slots_per_bank=-1)


def test_ids_take_slots_up_to_slots_per_bank_and_open_banks_for_the_rest():
    manager = ObjectManager(3)
    slots = [manager.add(object_id) for object_id in range(1, 8)]
    assert slots == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (2, 1)]
    assert manager.num_banks == 3


def test_five_objects_with_three_slots_use_two_banks_and_each_follows_its_region():
    tracker, spy = oracle_tracker(slots_per_bank=3)
    assert tracker.slots_per_bank == 3
    columns = {object_id: 2 * object_id for object_id in range(1, 6)}
    moved = 0
    tracker.add_objects(random_frame(64, 400), strip_seed(columns, moved))
    for _ in range(3):
        moved += 4
        assert_ids_follow(tracker.step(random_frame(64, 400)), columns, moved)
    assert spy.logit_banks == [2, 2, 2]
    assert all(tracker.objects.slot_of(i)[1] <= 3 for i in columns)
    for frame in tracker.memory.frames() + [tracker.memory.short]:
        assert frame.mask.shape[:2] == (2, 11)  # the model's channels; slots 4..10 unused
        assert not frame.mask[:, 4:].any()


def test_removals_compact_the_banks_of_three_slots():
    tracker, spy = oracle_tracker(slots_per_bank=3)
    columns = {object_id: 2 * object_id for object_id in range(1, 6)}
    moved = 0
    tracker.add_objects(random_frame(64, 400), strip_seed(columns, moved))
    moved += 4
    tracker.step(random_frame(64, 400))
    for object_id in (1, 2):  # 3 objects left: objects 4 and 5 move to bank 0, slots 1 and 2
        tracker.remove_object(object_id)
        del columns[object_id]
    assert tracker.objects.num_banks == 1
    assert [tracker.objects.slot_of(i) for i in (3, 4, 5)] == [(0, 3), (0, 1), (0, 2)]
    for _ in range(3):
        moved += 4
        assert_ids_follow(tracker.step(random_frame(64, 400)), columns, moved)
    assert spy.logit_banks[-1] == 1 and tracker.memory.tensors().long_id.shape[0] == 1
    new = {7: 14, 8: 16}  # two more: the second bank opens again
    columns.update(new)
    moved += 4
    assert_ids_follow(tracker.add_objects(random_frame(64, 400), strip_seed(new, moved)),
                      columns, moved)
    moved += 4
    assert_ids_follow(tracker.step(random_frame(64, 400)), columns, moved)
    assert spy.logit_banks[-1] == 2
    assert [tracker.objects.slot_of(i) for i in (7, 8)] == [(1, 1), (1, 2)]


# ------------------------------------------------------------- the shipped student, 15 ids
BEAR_ID = 11  # the first slot of the second bank; ids 1..10 fill the first bank
REMOVE_AT = 4
FRAMES = 16


def fifteen_object_seed(bear: np.ndarray) -> np.ndarray:
    """Return a seed of the bear as BEAR_ID and 14 boxes on the wall above and ground below."""
    seed = np.zeros(bear.shape, np.int64)
    others = [object_id for object_id in range(1, 16) if object_id != BEAR_ID]
    for index, object_id in enumerate(others):
        row, column = divmod(index, 7)
        top = 5 if row == 0 else 222
        seed[top:top + 14, 10 + column * 60:50 + column * 60] = object_id
    seed[bear] = BEAR_ID
    return seed


def track_and_remove(compact: bool) -> tuple[list[np.ndarray], list[int]]:
    """Return the bear masks of frames 1.. and logit banks; objects 1..5 go at REMOVE_AT."""
    frames, truths = sample_clip()
    tracker = build_tracker(None, TrackerConfig(slots_per_bank=10))  # all slots of a bank
    spy = tracker.backend = SpyBackend(tracker.backend)
    tracker.add_objects(frames[0], fifteen_object_seed(truths[0] == 1))
    labels = []
    with pytest.MonkeyPatch.context() as patch:
        if not compact:  # the engine as it was: banks never shrink
            patch.setattr(ObjectManager, "compact", lambda self: [])
        for index in range(1, FRAMES):
            if index == REMOVE_AT:
                for object_id in range(1, 6):
                    tracker.remove_object(object_id)
            labels.append(tracker.step(frames[index]).labels == BEAR_ID)
    return labels, spy.logit_banks


@pytest.fixture(scope="module")
def bear_runs():
    return {"compacted": track_and_remove(True), "kept": track_and_remove(False)}


def test_the_bear_in_the_second_bank_follows_the_bear_among_fifteen_objects(bear_runs):
    # Training clips hold <= 5 objects: objects in the last of 10 slots are lost or drift
    # to the bear, so only the first slots can be held to a standard; BEAR_ID uses the
    # first slot of the second bank. Floor 0.7: the shipped student of 2026-12-08 gives
    # 0.71 on frame 2 among 14 others (the previous one 0.8+; it is better on held-out
    # composites of 1-5 objects: evaluate_heldout).
    _, truths = sample_clip()
    bear, banks = bear_runs["compacted"]
    assert banks[:REMOVE_AT - 1] == [2] * (REMOVE_AT - 1)
    for index in range(1, REMOVE_AT):
        assert iou(bear[index - 1], truths[index] == 1) >= 0.7, index


def test_removals_drop_the_surplus_bank_and_keep_the_tracking_quality(bear_runs):
    _, truths = sample_clip()
    compacted, banks = bear_runs["compacted"]
    kept, kept_banks = bear_runs["kept"]
    assert banks[REMOVE_AT - 1:] == [1] * (FRAMES - REMOVE_AT)  # ceil(10 objects / 10 slots)
    assert kept_banks[REMOVE_AT - 1:] == [2] * (FRAMES - REMOVE_AT)
    after = range(REMOVE_AT, FRAMES)
    # the bear moved to bank 0, slot 1: close to the mask it keeps in bank 1 (its bank
    # companions differ, 9 others against 4: the 2026-12-08 student drifts to 0.85, mean 0.88)
    agreement = [iou(compacted[index - 1], kept[index - 1]) for index in after]
    assert np.mean(agreement) >= 0.85 and min(agreement) >= 0.8, agreement
    j_compacted = np.mean([iou(compacted[i - 1], truths[i] == 1) for i in after])
    j_kept = np.mean([iou(kept[i - 1], truths[i] == 1) for i in after])
    print(f"bear J after the removals: {j_compacted:.3f} compacted, {j_kept:.3f} two banks")
    # compaction costs nothing (the mechanics); the floor is the model's: with 10 objects in
    # one bank the 2026-12-08 student holds the bear at J 0.66 (the previous one 0.8+; a
    # regression of 10-object banks, which its training clips (<= 5 objects) never held)
    assert j_compacted >= j_kept - 0.02 and j_compacted >= 0.6


def test_background_is_what_the_objects_leave_and_never_negative():
    objects = torch.tensor([[[0.2, 0.7]], [[0.3, 0.6]]])  # (2 objects, 1, 2)
    assert torch.allclose(background_from_objects(objects, dim=0), torch.tensor([[0.5, 0.0]]))
    banks = torch.stack([objects, objects * 0.5])  # (2 banks, 2 objects, 1, 2)
    assert torch.allclose(background_from_objects(banks, dim=1),
                          torch.tensor([[[0.5, 0.0]], [[0.75, 0.35]]]))
