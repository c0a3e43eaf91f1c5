"""The shipped weights: trained, fp16, small, and scored as their metadata says.

Their recorded held-out score must match what they do on the shipped sample clip (bear, a
held-out sequence), and what their meta links can be recomputed here: the teacher a
student was distilled from, by sha256, once the trainer records it (`meta.provenance`).
"""

from pathlib import Path

import pytest
import torch

from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig, student_config, teacher_config
from defvos_core.config_io import to_dict
from defvos_core.data.sequences import VideoSequence
from defvos_core.data.video_io import list_frame_files
from defvos_core.evaluation.metrics import summarize
from defvos_core.evaluation.tracking import score_sequences
from defvos_core.model.checkpoint import (
    DEFAULT_STUDENT_WEIGHTS,
    DEFAULT_TEACHER_WEIGHTS,
    load_model,
    read_weights,
)
from defvos_core.training.provenance import file_sha256, provenance_problems

torch.set_num_threads(1)
SAMPLE = DEFAULT_STUDENT_WEIGHTS.parent / "sample" / "bear"
MIB = 1024 * 1024


@pytest.mark.parametrize("path, preset, max_mib", [
    (DEFAULT_STUDENT_WEIGHTS, student_config, 16), (DEFAULT_TEACHER_WEIGHTS, teacher_config, 25)])
def test_shipped_weights_are_trained_fp16_and_small(path: Path, preset, max_mib: int):
    payload = read_weights(path)
    meta = payload["meta"]
    assert meta["trained"] is True
    architecture = {key: value for key, value in to_dict(preset()).items()
                    if key not in ("pretrained_encoder", "prompt_head")}
    assert {key: payload["model_config"][key] for key in architecture} == architecture
    assert path.stat().st_size <= max_mib * MIB
    floats = [v for v in payload["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert set(meta["data"]["holdout"]) == set(meta["heldout_eval"]["sequences"])
    assert not set(meta["data"]["holdout"]) & set(meta["data"]["sequences"])
    load_model(path)  # builds the model the file describes, strict state-dict load


def test_shipped_student_is_smaller_and_any_teacher_is_the_shipped_one():
    """A distilled student names the shipped teacher (a teacher-free one names none)."""
    meta = read_weights(DEFAULT_STUDENT_WEIGHTS)["meta"]
    if meta["stage"] == "student":
        assert Path(meta["teacher_weights"]).name == DEFAULT_TEACHER_WEIGHTS.name
        assert meta["config"]["distill"]["attention"] > 0  # the paper's loss, not logits only
    else:
        assert meta["config"]["model_preset"] == "student" and "teacher_weights" not in meta
    sizes = [sum(p.numel() for p in load_model(path).parameters())
             for path in (DEFAULT_STUDENT_WEIGHTS, DEFAULT_TEACHER_WEIGHTS)]
    assert sizes[0] < sizes[1] / 2


@pytest.mark.parametrize("path", [DEFAULT_STUDENT_WEIGHTS, DEFAULT_TEACHER_WEIGHTS])
def test_shipped_provenance_is_consistent(path: Path):
    """Fields written by the trainer / crossval are checked where the file has them."""
    meta = read_weights(path)["meta"]
    assert provenance_problems(meta, {"teacher": DEFAULT_TEACHER_WEIGHTS}) == []
    provenance = meta.get("provenance")
    if provenance is None:  # trained before the trainer wrote it: nothing more to recompute
        return
    assert provenance["steps_done"] == meta["steps"] <= provenance["steps_planned"]
    assert isinstance(provenance["time_limit_reached"], bool)
    assert provenance["command"] and provenance["hardware"]["torch"]
    if meta["stage"] == "student":
        assert provenance["teacher"]["sha256"] == file_sha256(DEFAULT_TEACHER_WEIGHTS)


def test_recorded_score_matches_the_sample_clip():
    """meta.heldout_eval comes from the same weights: bear, rerun here, gives its J&F."""
    recorded = read_weights(DEFAULT_STUDENT_WEIGHTS)["meta"]["heldout_eval"]["per_sequence"]
    frames = list_frame_files(SAMPLE / "frames")
    masks = {index: SAMPLE / "masks" / f"{path.stem}.png" for index, path in enumerate(frames)}
    tracker = build_tracker(None, TrackerConfig(size=240, device="cpu"))
    # The scoring path of `evaluate --split val`, which wrote heldout_eval.
    score = summarize(score_sequences(tracker, [VideoSequence("bear", frames, masks)]))
    assert score["sequences"]["bear"]["J&F"] == pytest.approx(recorded["bear"], abs=2e-3)
