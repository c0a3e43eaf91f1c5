"""Held-out still images and the held-out composites made of them (choosing models).

The split rule is checked on made-up folders and on the real ECSSD / DUTS-TR copies; the
composites are checked to read held-out images only, to be the same every time, and to
score a tracker per object.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from defvos_core.data.ecssd import read_static_images
from defvos_core.data.still_images import heldout_every, read_still_split, split_still_images
from defvos_core.evaluation.heldout_composites import (MAX_OBJECTS, HeldoutCompositeConfig,
                                                       heldout_composites, score_composites)

from data_paths import DATA, DUTS, ECSSD, REPO, missing


def _folder(root: Path, count: int) -> Path:
    """`count` photographs with a disc each, ECSSD layout, named 0001..."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(1, count + 1):
        image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
        mask = np.zeros((60, 80), np.uint8)
        cv2.circle(mask, (40, 30), 12 + index % 5, 255, -1)
        cv2.imwrite(str(root / "images" / f"{index:04d}.jpg"), image)
        cv2.imwrite(str(root / "masks" / f"{index:04d}.png"), mask)
    return root


def test_split_holds_out_every_nth_image_by_name(tmp_path):
    items = read_static_images(_folder(tmp_path / "stills", 25))
    train, heldout = split_still_images(list(reversed(items)), 5)
    assert [item.name.split("/")[1] for item in heldout] == ["0005", "0010", "0015", "0020",
                                                             "0025"]
    assert len(train) == 20 and not {i.name for i in train} & {i.name for i in heldout}
    with pytest.raises(ValueError, match="stride"):
        split_still_images(items, 1)
    assert heldout_every("/x/ecssd") == 5 and heldout_every("duts-tr") == 20
    assert heldout_every("elsewhere") == 10


def test_read_still_split_covers_every_folder(tmp_path):
    roots = [str(_folder(tmp_path / "a", 20)), str(_folder(tmp_path / "b", 30))]
    train = read_still_split(roots, "train")
    heldout = read_still_split(roots, "heldout")
    assert (len(train), len(heldout)) == (18 + 27, 2 + 3)  # every 10th of unknown folders
    with pytest.raises(ValueError, match="part"):
        read_still_split(roots, "test")


@pytest.mark.skipif(bool(missing(ECSSD, DUTS)), reason=missing(ECSSD, DUTS))
def test_real_still_datasets_split_as_documented():
    roots = [str(ECSSD), str(DUTS)]
    train, heldout = read_still_split(roots, "train"), read_still_split(roots, "heldout")
    assert len(heldout) == 200 + 526 and len(train) == 800 + 10539 - 526
    assert not {item.name for item in train} & {item.name for item in heldout}


def test_composites_read_held_out_images_only_and_repeat(tmp_path, monkeypatch):
    import defvos_core.data.static_dataset as static_dataset

    root = str(_folder(tmp_path / "stills", 40))
    _, heldout = split_still_images(read_static_images(root), heldout_every(root))
    read: set[str] = set()
    original = static_dataset.read_rgb

    def recording_read(path):
        read.add(Path(path).stem)
        return original(path)

    monkeypatch.setattr(static_dataset, "read_rgb", recording_read)
    config = HeldoutCompositeConfig(clips=6, frames=4, size=(64, 96))
    clips = heldout_composites(config, [root])
    assert read and read <= {Path(item.image_path).stem for item in heldout}
    again = heldout_composites(config, [root])
    assert [c.name for c in clips] == [c.name for c in again]
    for clip, other in zip(clips, again):
        assert all(np.array_equal(a, b) for a, b in zip(clip.frames, other.frames))
        assert len(clip.frames) == 4 and clip.frames[0].shape == (64, 96, 3)
    counts = [int(clip.labels[0].max()) for clip in clips]
    assert counts[0] == 1 and max(counts) <= MAX_OBJECTS


def test_score_composites_scores_each_object(tmp_path):
    from defvos_core.build import build_tracker

    root = str(_folder(tmp_path / "stills", 40))
    clips = heldout_composites(HeldoutCompositeConfig(clips=2, frames=3, size=(64, 96)),
                               [root])
    report = score_composites(build_tracker(), clips)
    assert report["clips"] == 2 and report["objects"] == sum(
        int(clip.labels[0].max()) for clip in clips)
    assert 0.0 <= report["J&F"] <= 1.0 and set(report["by_count"]) <= {1, 2}


@pytest.mark.skipif(bool(missing(ECSSD, DUTS)), reason=missing(ECSSD, DUTS))
def test_evaluate_heldout_prints_records_and_refuses_bad_input(tmp_path, capsys):
    from defvos_core.evaluate_heldout import main
    from defvos_core.model.checkpoint import save_weights, weights_meta
    from defvos_core.model.vos_model import VOSModel
    from defvos_core.training.config import load_train_config

    tiny = load_train_config(REPO / "config" / "training" / "tiny_cpu_static.yaml").model
    weights = tmp_path / "tiny.pt"
    save_weights(VOSModel(tiny), weights, meta={"trained": False})
    common = ["--data", str(DATA), "--clips", "2", "--frames", "3", "--threads", "1"]
    assert main(["--weights", "default", "--record", *common]) == 2
    assert main(["--weights", str(tmp_path / "absent.pt"), *common]) == 2
    assert main(["--weights", str(weights), "--split", "fold9", *common]) == 2
    capsys.readouterr()
    assert main(["--weights", str(weights), "--split", "val", "--record",
                 "--json", str(tmp_path / "out.json"), *common]) == 0
    assert "| composites spb=1" in capsys.readouterr().out
    meta = weights_meta(weights)
    assert sorted(meta["heldout_eval"]["per_sequence"]) == sorted(
        ["bear", "car-turn", "hike", "mallard-water", "tennis"])
    assert set(meta["heldout_composites"]) >= {"spb1", "spb0", "config", "command"}
    assert meta["heldout_composites"]["spb1"]["clips"] == 2
