"""Presence: an object whose score drops below its recent median is reported absent."""

from pathlib import Path

import numpy as np

from defvos_core.build import build_tracker
from defvos_core.config import PresenceConfig, TrackerConfig
from defvos_core.data.masks import read_label_map
from defvos_core.data.video_io import list_frame_files, read_rgb
from defvos_core.inference.presence import PresenceTracker

PIXELS = 10_000
SAMPLE = Path(__file__).resolve().parents[1] / "defvos_core" / "assets" / "sample" / "bear"


def test_a_score_drop_below_the_recent_median_means_absent_until_it_recovers():
    presence = PresenceTracker(PresenceConfig(confidence_drop=0.03, window=4))
    scores = [0.94, 0.95, 0.93, 0.94, 0.88, 0.89, 0.945, 0.94]
    states = [presence.update({1: 500}, {1: score}, PIXELS)[1] for score in scores]
    assert [s.present for s in states] == [True] * 4 + [False, False] + [True, True]
    assert [s.frames_since_seen for s in states] == [0, 0, 0, 0, 1, 2, 0, 0]


def test_absent_frames_do_not_lower_the_reference():
    presence = PresenceTracker(PresenceConfig(confidence_drop=0.03, window=3))
    for score in (0.95, 0.95, 0.95):
        presence.update({1: 500}, {1: score}, PIXELS)
    for _ in range(10):  # a long occlusion at a lower score stays absent
        state = presence.update({1: 500}, {1: 0.90}, PIXELS)[1]
    assert not state.present and state.frames_since_seen == 10


def test_small_or_empty_masks_are_absent_and_the_rule_can_be_turned_off():
    presence = PresenceTracker(PresenceConfig(confidence_drop=0.0, min_area_fraction=0.01))
    assert not presence.update({1: 50}, {1: 0.99}, PIXELS)[1].present  # 0.5 % < 1 %
    assert presence.update({1: 500}, {1: 0.10}, PIXELS)[1].present  # no score test
    assert not PresenceTracker().update({1: 0}, {1: 0.0}, PIXELS)[1].present


def test_the_tracker_leaves_absent_objects_out_of_the_label_map(monkeypatch):
    frames = [read_rgb(path) for path in list_frame_files(SAMPLE / "frames")[:4]]
    seed = read_label_map(SAMPLE / "masks" / "00000.png")
    tracker = build_tracker(None, TrackerConfig(size=120))
    assert tracker.add_objects(frames[0], seed).presence[1].present
    for frame in frames[1:3]:
        result = tracker.step(frame)
    assert result.presence[1].present and result.area[1] > 0
    monkeypatch.setattr(tracker.presence.config, "min_area_fraction", 0.9)  # now too small
    result = tracker.step(frames[3])
    assert not result.presence[1].present and result.presence[1].frames_since_seen == 1
    assert result.area[1] == 0 and not np.any(result.labels == 1)


def test_objects_in_separate_banks_stay_present_beside_a_look_alike():
    """Keep both objects present although each bank also claims the other's look-alike.

    That lowers the merged probability; the score is taken within the object's own bank.
    """
    names = list_frame_files(SAMPLE / "frames")[:12]
    frames = [np.concatenate([rgb, rgb[:, ::-1]], axis=1) for rgb in map(read_rgb, names)]
    mask = read_label_map(SAMPLE / "masks" / "00000.png") == 1
    seed = np.concatenate([mask * 1, mask[:, ::-1] * 2], axis=1)
    tracker = build_tracker(None, TrackerConfig(size=120, slots_per_bank=1))
    tracker.add_objects(frames[0], seed)
    assert tracker.objects.num_banks == 2
    for frame in frames[1:]:
        result = tracker.step(frame)
        assert all(state.present for state in result.presence.values()), result.confidence
        assert min(result.confidence.values()) > 0.8, result.confidence
