"""Multi-object evaluation: composited clips, multi vs single scores, the command line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from defvos_core.config import TrackerConfig
from defvos_core.data.masks import read_label_map
from defvos_core.data.sequences import VideoSequence
from defvos_core.data.video_io import list_frame_files
from defvos_core.evaluate_multi import main
from defvos_core.evaluation.multi_object import (clip_tuples, compose_clip,
                                                 evaluate_multi_object, format_by_slot,
                                                 format_results, MultiObjectConfig)
from defvos_core.inference.backend import TorchBackend
from tracker_helpers import tiny_model

SAMPLE = Path(__file__).resolve().parents[1] / "defvos_core" / "assets" / "sample" / "bear"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sample_sequence(name: str, count: int = 8) -> VideoSequence:
    """Return the sample bear clip under another name (a source of one object)."""
    frames = list_frame_files(SAMPLE / "frames")[:count]
    masks = {i: SAMPLE / "masks" / f"{path.stem}.png" for i, path in enumerate(frames)}
    return VideoSequence(name, frames, masks)


def test_clip_sources_are_cyclic_windows_of_the_split():
    assert clip_tuples(list("abcde"), 3) == [
        ("a", "b", "c"), ("b", "c", "d"), ("c", "d", "e"), ("d", "e", "a"), ("e", "a", "b")]
    assert [t[0] for t in clip_tuples(list("abcdefgh"), 2, clips=4)] == ["a", "c", "e", "g"]
    with pytest.raises(ValueError, match="6 objects"):
        clip_tuples(list("abcde"), 6)


def test_pasted_objects_occlude_the_scene_and_the_clip_is_deterministic():
    sources = [sample_sequence(name, 12) for name in ("scene", "second", "third")]
    clip = compose_clip(sources, MultiObjectConfig(max_frames=8))
    again = compose_clip(sources, MultiObjectConfig(max_frames=8))
    assert clip.sources == ("scene", "second", "third") and len(clip.frames) == 8
    assert all(np.array_equal(a, b) for a, b in zip(clip.labels + clip.frames,
                                                    again.labels + again.frames))
    assert set(np.unique(clip.labels[0])) == {0, 1, 2, 3}
    for t, labels in enumerate(clip.labels):
        scene = read_label_map(sources[0].mask_paths[t]) == 1
        assert not (labels == 1)[~scene].any()  # object 1 only where the scene's object is
        assert set(np.unique(labels[scene])) <= {1, 2, 3}  # ... unless a pasted one hides it
        frame = sources[0].load_frame(t)
        for object_id in (2, 3):
            pasted = labels == object_id
            assert 0 < pasted.sum() < scene.sum()  # scaled down: the sample's bear is large
            assert not np.array_equal(clip.frames[t][pasted], frame[pasted])
    first, last = (np.argwhere(clip.labels[t] == 2).mean(axis=0) for t in (0, 7))
    assert np.abs(first - last).max() > 2  # it moves over the scene


def test_multi_and_single_scores_per_object_count_and_slots_per_bank():
    sequences = {name: sample_sequence(name, 6) for name in ("a", "b", "c")}
    backend = TorchBackend(tiny_model())
    results, singles = evaluate_multi_object(
        backend, TrackerConfig(size=48), sequences, counts=[2, 3], slots_per_bank=[10, 2],
        clips=1, clip_config=MultiObjectConfig(max_frames=5))
    layout = [(r.num_objects, r.slots_per_bank, r.banks, r.clips) for r in results]
    assert layout == [(2, 10, 1, 1), (2, 2, 1, 1), (3, 10, 1, 1), (3, 2, 2, 1)]
    for result in results:
        assert [o.object_id for o in result.objects] == list(range(1, result.num_objects + 1))
        assert all(o.slot <= result.slots_per_bank for o in result.objects)
        assert result.timing.frames == 5
        for score in result.objects:
            assert 0 <= min(score.multi, score.single, score.own) <= 1
        assert result.objects[0].single == result.objects[0].own  # object 1: its own video
    assert [(o.bank, o.slot) for o in results[3].objects] == [(0, 1), (0, 2), (1, 1)]
    # The same slots run the same computation; single scores do not depend on the setting.
    assert [o.multi for o in results[0].objects] == [o.multi for o in results[1].objects]
    assert [o.single for o in results[2].objects] == [o.single for o in results[3].objects]
    # Cached: a, b and c alone on their own 5 frames, then b on a+b, b and c on a+b+c.
    assert singles.timing.frames == 5 * (3 + 1 + 2)
    table = format_results(results)
    assert len(table.splitlines()) == 5 and "ratio" in table
    assert "slot" in format_by_slot(results)


def test_cli_writes_the_table_and_json(tmp_path, capsys):
    root = tmp_path / "davis"
    for name in ("one", "two"):
        (root / "JPEGImages" / "240p").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / "240p").mkdir(parents=True, exist_ok=True)
        (root / "JPEGImages" / "240p" / name).symlink_to(SAMPLE / "frames")
        (root / "Annotations" / "240p" / name).symlink_to(SAMPLE / "masks")
    split = tmp_path / "pair.txt"
    split.write_text("one\ntwo\n")
    out = tmp_path / "multi.json"
    assert main(["--data", str(root), "--split", str(split), "--objects", "2", "--max-frames",
                 "4", "--size", "64", "--slots-per-bank", "10,1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "J&F multi" in printed
    report = json.loads(out.read_text())
    assert [(r["objects"], r["slots_per_bank"], r["banks"], r["clips"])
            for r in report["results"]] == [(2, 10, 1, 2), (2, 1, 2, 2)]
    assert 0 <= report["results"][0]["multi"] <= 1


def test_cli_rejects_bad_input_with_exit_code_2(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nope"), "--split", "val"]) == 2
    assert "error" in capsys.readouterr().err
    split = tmp_path / "one.txt"
    split.write_text("bear\n")
    root = tmp_path / "davis"
    (root / "JPEGImages" / "240p").mkdir(parents=True)
    (root / "JPEGImages" / "240p" / "bear").symlink_to(SAMPLE / "frames")
    assert main(["--data", str(root), "--split", str(split), "--objects", "2"]) == 2
    assert "1 sequences" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--slots-per-bank", "three"])
