"""Lost-and-found evaluation: the occluder hides the object, the figures are consistent."""

from pathlib import Path

import numpy as np
import pytest

from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig
from defvos_core.data.sequences import VideoSequence
from defvos_core.data.video_io import list_frame_files
from defvos_core.evaluate_occlusion import main
from defvos_core.evaluation.occlusion import (OcclusionConfig, evaluate_occlusions,
                                              format_summaries, object_box, occlude)

SAMPLE = Path(__file__).resolve().parents[1] / "defvos_core" / "assets" / "sample" / "bear"


def sample_sequence(count: int = 24) -> VideoSequence:
    frames = list_frame_files(SAMPLE / "frames")[:count]
    masks = {i: SAMPLE / "masks" / f"{path.stem}.png" for i, path in enumerate(frames)}
    return VideoSequence("bear", frames, masks)


def test_the_occluder_covers_the_whole_object_and_only_its_box():
    frame = np.zeros((40, 60, 3), np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 20:30] = True
    texture = np.full((7, 5, 3), 200, np.uint8)
    edited = occlude(frame, mask, texture, margin=0.2)
    top, left, bottom, right = object_box(mask, 0.2)
    assert (top, left, bottom, right) == (8, 18, 22, 32)
    assert np.all(edited[mask] == 200)  # nothing of the object is visible
    outside = np.ones_like(mask)
    outside[top:bottom, left:right] = False
    assert np.all(edited[outside] == 0) and np.all(frame == 0)  # input untouched


def test_occlusion_figures_are_consistent_on_the_sample_clip():
    tracker = build_tracker(None, TrackerConfig(size=120))
    config = OcclusionConfig(lengths=(4,), window_after=6, start_fraction=0.25)
    sequence = sample_sequence()
    (summary,) = evaluate_occlusions(tracker, [sequence], [sequence], config)
    (result,) = summary.results
    assert result.sequence == "bear" and result.length == 4
    assert 0.0 <= result.false_presence <= 1.0 and result.frames_after == 6
    assert result.redetected == (result.delay is not None)
    if result.redetected:
        assert 0 <= result.delay < 6
    assert "false presence" in format_summaries([summary])


def test_cli_rejects_a_missing_data_folder(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nope"), "--split", "val"]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("too_long", [30])
def test_a_sequence_too_short_for_the_occlusion_is_skipped(too_long):
    tracker = build_tracker(None, TrackerConfig(size=120))
    config = OcclusionConfig(lengths=(too_long,))
    (summary,) = evaluate_occlusions(tracker, [sample_sequence(12)], [sample_sequence(12)],
                                     config)
    assert summary.results == []
