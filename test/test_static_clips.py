"""Static-image pretraining: warps, synthetic clips, their dataset, the folds, the static stage.

Synthetic inputs with unique colours check that labels follow the pixels; the dataset and
the trainer run on the real ECSSD stills and DAVIS-240p sequences (`data_paths`).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from defvos_core.data.clip_dataset import ClipSamplingConfig, make_loader
from defvos_core.data.ecssd import load_static_image, read_static_images
from defvos_core.data.folds import FOLDS, NUM_FOLDS, fold_split
from defvos_core.data.splits import HOLDOUT_SEQUENCES, read_named_sequences, resolve_split
from defvos_core.data.static_clips import (ClipRecipe, LayerSource, StaticClipConfig,
                                           compose_clip, occluder_trajectory, paste_layer)
from defvos_core.data.static_dataset import MixedClipDataset, StaticClipDataset
from defvos_core.data.warps import MotionConfig, random_trajectory, warp_layer
from defvos_core.model.checkpoint import load_model, save_weights, weights_meta
from defvos_core.model.vos_model import VOSModel
from defvos_core.training.config import load_train_config

from data_paths import DAVIS, ECSSD, REPO, missing

TINY_STATIC = REPO / "config" / "training" / "tiny_cpu_static.yaml"
TINY_TEACHER = REPO / "config" / "training" / "tiny_cpu_teacher.yaml"
TINY_STUDENT = REPO / "config" / "training" / "tiny_cpu_student.yaml"
needs_data = pytest.mark.skipif(bool(missing(DAVIS, ECSSD)), reason=missing(DAVIS, ECSSD))

COLOURS = np.array([(255, 0, 255), (0, 255, 255), (255, 255, 0)], np.uint8)  # object colours
QUIET = dict(blur_probability=0.0, object_jitter_probability=0.0, occluder_probability=0.0,
             distractor_probability=0.0)  # no pixel changes beyond the warps


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def _background(size=(120, 160), seed=0) -> np.ndarray:
    """Dark grey-green noise: far from every object colour."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 110, size + (3,), dtype=np.uint8)
    image[..., 0] //= 2
    return image


def _disc(colour: np.ndarray, size=(90, 70), num_frames=5) -> LayerSource:
    """Make a still of a filled ellipse of `colour` on noise, its mask the ellipse."""
    image = _background(size, seed=int(colour.sum()))
    mask = np.zeros(size, np.uint8)
    cv2.ellipse(mask, (size[1] // 2, size[0] // 2), (size[1] // 3, size[0] // 3), 20, 0, 360,
                1, -1)
    image[mask == 1] = colour
    return LayerSource([image] * num_frames, [mask] * num_frames)


def _interior(labels: np.ndarray, label: int) -> np.ndarray:
    """Pixels of `label` not touching another label (no bilinear mixing at edges)."""
    region = (labels == label).astype(np.uint8)
    return cv2.erode(region, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0) > 0


def _compose(recipe: ClipRecipe, seed: int, **overrides):
    config = StaticClipConfig(**{**QUIET, "max_objects": 3, **overrides})
    return compose_clip(recipe, (96, 128), config, np.random.default_rng(seed),
                        flip_probability=0.5, jitter=False)


# ----------------------------------------------------------------------------- warps

def test_trajectories_are_smooth_and_bounded():
    motion = MotionConfig()
    rng = np.random.default_rng(0)
    poses = random_trajectory(12, rng, motion, (80, 60), (64.0, 48.0), 30.0, (96, 128),
                              (0.0, 0.0, 128.0, 96.0), velocity=(3.0, 0.0))
    centres = np.array([pose.homography[:2, :] @ (30, 40, 1) / (pose.homography[2] @ (30, 40, 1))
                        for pose in poses])  # where the source centre goes, (12, 2)
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 0.25 * 128 and steps.sum() > 5  # it moves, without jumps
    assert ((centres >= -1) & (centres <= (129, 97))).all()
    assert all(np.abs(pose.deformation).max() <= motion.max_deformation for pose in poses)


def test_warp_layer_moves_image_and_mask_together():
    source = _disc(COLOURS[0])
    rng = np.random.default_rng(3)
    for pose in random_trajectory(5, rng, MotionConfig(), source.frames[0].shape[:2],
                                  (60.0, 50.0), 40.0, (96, 128), (0.0, 0.0, 128.0, 96.0)):
        warped = warp_layer(source.frames[0], source.masks[0], pose, (96, 128))
        assert warped is not None and warped.mask.sum() > 100
        inside = cv2.erode(warped.mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert np.abs(warped.image[inside] - COLOURS[0]).max() <= 12
        assert np.allclose(warped.alpha[inside], 1.0, atol=0.05)


# -------------------------------------------------------------------------- clips

@pytest.mark.parametrize("seed", range(4))
def test_labels_follow_the_object_under_the_scene_warp(seed):
    scene = _disc(COLOURS[0], size=(120, 160))
    frames, labels, num_objects = _compose(ClipRecipe(scene, True, []), seed)
    assert num_objects == 1 and len(frames) == len(labels) == 5
    areas = [int((label_map == 1).sum()) for label_map in labels]
    assert min(areas) > 200
    assert any(not np.array_equal(labels[0], later) for later in labels[1:])  # it moved
    for frame, label_map in zip(frames, labels):
        assert frame.shape == (96, 128, 3) and frame.dtype == np.uint8
        assert label_map.shape == (96, 128) and set(np.unique(label_map)) <= {0, 1}
        inside = _interior(label_map, 1)
        assert np.abs(frame[inside].astype(int) - COLOURS[0]).max() <= 12
        coloured = (np.abs(frame.astype(int) - COLOURS[0]).max(axis=-1) <= 12)
        assert (label_map[coloured] == 1).mean() > 0.97


@pytest.mark.parametrize("seed", range(6))
def test_pasted_objects_keep_distinct_ids_and_their_colours(seed):
    objects = [_disc(colour) for colour in COLOURS]
    scene = LayerSource([_background()] * 5, [np.zeros((120, 160), np.uint8)] * 5)
    frames, labels, num_objects = _compose(ClipRecipe(scene, False, objects), seed)
    assert 1 <= num_objects <= 3
    assert set(np.unique(labels[0])) == set(range(num_objects + 1))
    colour_of: dict[int, int] = {}
    for frame, label_map in zip(frames, labels):
        assert set(np.unique(label_map)) <= set(range(num_objects + 1))
        for object_id in range(1, num_objects + 1):
            inside = _interior(label_map, object_id)
            if inside.sum() < 5:
                continue
            distances = np.abs(frame[inside][:, None].astype(int) - COLOURS[None]).max(-1)
            colour = int(np.bincount(distances.argmin(-1)).argmax())
            assert (distances[:, colour] <= 12).mean() > 0.98  # one colour per id
            assert colour_of.setdefault(object_id, colour) == colour  # same one every frame
    assert len(set(colour_of.values())) == len(colour_of)  # different ids, different objects


def test_occluder_hides_part_of_the_object_and_keeps_labels_consistent():
    scene = LayerSource([_background((96, 128))] * 5, [np.zeros((96, 128), np.uint8)] * 5)
    frames, labels, _ = _compose(ClipRecipe(scene, False, [_disc(COLOURS[0])]), 0,
                                 object_size=(0.5, 0.5))
    before_frames = [frame.copy() for frame in frames]
    before_labels = [label_map.copy() for label_map in labels]
    grey = np.full((40, 40, 3), 128, np.uint8)
    occluder = LayerSource([grey] * 5, [np.ones((40, 40), np.uint8)] * 5)
    rng = np.random.default_rng(1)
    poses = occluder_trajectory(occluder, labels[0] == 1, StaticClipConfig(**QUIET), rng)
    paste_layer(frames, labels, occluder, poses, 0)
    covered_somewhere = False
    for t in range(5):
        lost = (before_labels[t] == 1) & (labels[t] == 0)
        assert set(np.unique(labels[t])) <= {0, 1}
        assert not ((labels[t] == 1) & (before_labels[t] != 1)).any()  # nothing gained
        inner = _interior(lost.astype(np.uint8), 1)  # edges are alpha-blended
        assert (np.abs(frames[t][inner].astype(int) - 128).max(initial=0)) <= 12
        covered_somewhere |= lost.sum() > 50
        unchanged = ~(np.abs(frames[t].astype(int) - before_frames[t]).max(-1) > 0)
        assert np.array_equal(labels[t][unchanged], before_labels[t][unchanged])
    assert covered_somewhere
    area_after = sum(int((m == 1).sum()) for m in labels)
    assert area_after < sum(int((m == 1).sum()) for m in before_labels)


# ------------------------------------------------------------------------- dataset

@pytest.fixture(scope="module")
def ecssd_images():
    if not ECSSD.is_dir():
        pytest.skip(f"{ECSSD} not available")
    return read_static_images(ECSSD)


@pytest.fixture(scope="module")
def davis_train():
    if not DAVIS.is_dir():
        pytest.skip(f"{DAVIS} not available")
    return read_named_sequences(DAVIS, resolve_split(DAVIS, "train"))


def test_ecssd_reader(ecssd_images):
    assert len(ecssd_images) == 1000 and ecssd_images[0].name == "ecssd/0001"
    image, labels = load_static_image(ecssd_images[0])
    assert image.dtype == np.uint8 and image.shape[2] == 3 and labels.shape == image.shape[:2]
    assert set(np.unique(labels)) == {0, 1}


def _dataset(images, davis, labelled=True, seed=0, **overrides):
    clip = ClipSamplingConfig(num_frames=4, crop_size=(96, 128), max_objects=5)
    return StaticClipDataset(images[:40], clip, StaticClipConfig(**overrides), davis,
                             samples_per_epoch=16, seed=seed, labelled=labelled)


def test_dataset_items_match_the_video_clip_items(ecssd_images, davis_train):
    dataset = _dataset(ecssd_images, davis_train, occluder_probability=0.5,
                       distractor_probability=0.5, blur_probability=0.5)
    names = set()
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["frames"].shape == (4, 3, 96, 128) and item["frames"].dtype == torch.float32
        assert 0.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
        labels = item["labels"]
        assert labels.shape == (4, 96, 128) and labels.dtype == torch.int64
        k = item["num_objects"]
        assert 1 <= k <= 3 and item["has_labels"] is True
        assert set(labels[0].unique().tolist()) == set(range(k + 1))
        assert set(labels.unique().tolist()) <= set(range(k + 1))
        assert item["frame_indices"].shape == (4,) and item["frame_indices"].dtype == torch.int64
        names.add(item["name"])
    assert any(name.startswith("ecssd/") for name in names)
    assert not names & set(HOLDOUT_SEQUENCES)
    batch = next(iter(make_loader(dataset, 4, 0, shuffle=True)))
    assert batch["frames"].shape == (4, 4, 3, 96, 128) and batch["has_labels"].all()


def test_unlabelled_items_keep_only_the_first_mask(ecssd_images, davis_train):
    labelled, unlabelled = (_dataset(ecssd_images, davis_train, labelled=flag)
                            for flag in (True, False))
    for index in range(4):
        item, plain = unlabelled[index], labelled[index]
        assert item["has_labels"] is False and (item["labels"][1:] == 255).all()
        assert torch.equal(item["labels"][0], plain["labels"][0])
        assert torch.equal(item["frames"], plain["frames"])
        assert item["num_objects"] == plain["num_objects"] >= 1


def test_items_are_reproducible_per_seed_index_and_epoch(ecssd_images, davis_train):
    first, again = _dataset(ecssd_images, davis_train), _dataset(ecssd_images, davis_train)
    other_seed = _dataset(ecssd_images, davis_train, seed=1)
    for index in (0, 5):
        a, b = first[(0, index)], again[(0, index)]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["labels"], b["labels"])
        assert not torch.equal(a["frames"], other_seed[(0, index)]["frames"])
        assert not torch.equal(a["frames"], first[(1, index)]["frames"])
        again.set_epoch(1)
        assert torch.equal(again[index]["frames"], first[(1, index)]["frames"])
        again.set_epoch(0)
    worker_batch = next(iter(make_loader(first, 2, 1, shuffle=False)))  # a forked worker
    assert torch.equal(worker_batch["frames"][1], first[(0, 1)]["frames"])


def test_davis_objects_come_only_from_the_given_sequences(ecssd_images, davis_train):
    two = [s for s in davis_train if s.name in ("dog-agility", "rollerblade")]
    dataset = _dataset(ecssd_images, two, davis_scene_probability=1.0)
    assert {dataset[index]["name"] for index in range(8)} <= {"dog-agility", "rollerblade"}
    no_davis = _dataset(ecssd_images, davis_train, davis_objects=False,
                        davis_scene_probability=1.0)
    assert all(no_davis[index]["name"].startswith("ecssd/") for index in range(4))


def test_mixed_dataset_replaces_a_fraction_of_items(ecssd_images, davis_train):
    synthetic = _dataset(ecssd_images, davis_train, labelled=False)
    primary = _dataset(ecssd_images, davis_train, seed=5)
    for fraction, expected in ((0.0, 0), (1.0, 16)):
        mixed = MixedClipDataset(primary, synthetic, fraction)
        assert sum(mixed.is_synthetic(i, 0) for i in range(16)) == expected
    mixed = MixedClipDataset(primary, synthetic, 0.5, seed=2)
    flags = [mixed.is_synthetic(i, 0) for i in range(len(mixed))]
    assert 0 < sum(flags) < len(flags)
    for index, flag in enumerate(flags[:6]):
        assert mixed[index]["has_labels"] is (not flag)
    with pytest.raises(ValueError, match="fraction"):
        MixedClipDataset(primary, synthetic, 1.5)


# --------------------------------------------------------------------------- folds

def test_folds_cover_the_training_sequences_once():
    names = [name for fold in FOLDS for name in fold]
    assert len(FOLDS) == NUM_FOLDS == 5 and all(len(fold) == 6 for fold in FOLDS)
    assert len(names) == len(set(names)) == 30
    if DAVIS.is_dir():
        listed = (DAVIS / "ImageSets" / "train.txt").read_text().split()
        assert sorted(names) == sorted(listed)
    for k in range(5):
        train, val = fold_split(k)
        assert val == list(FOLDS[k]) and len(train) == 24 and not set(train) & set(val)
        assert len(set(val) & set(HOLDOUT_SEQUENCES)) == 1
        assert ("mallard-fly" in val) == ("mallard-water" in val)
    with pytest.raises(ValueError, match="fold index"):
        fold_split(5)


def test_resolve_split_names_the_folds(tmp_path):
    assert resolve_split(tmp_path, "fold1") == list(FOLDS[1])
    assert resolve_split(tmp_path, "train-fold1") == fold_split(1)[0]
    assert resolve_split(tmp_path, "val") == list(HOLDOUT_SEQUENCES)
    with pytest.raises(ValueError, match="fold index"):
        resolve_split(tmp_path, "fold7")
    with pytest.raises(FileNotFoundError):
        resolve_split(tmp_path, "folder")


# ---------------------------------------------------------------------------- stage

def _config(path: Path, tmp_path: Path, *overrides: str):
    return load_train_config(path, [f"run_dir={tmp_path / 'run'}", f"data.root={DAVIS}",
                                    f"data.static.roots=[{ECSSD}]", *overrides])


@needs_data
def test_static_stage_trains_exports_and_starts_the_teacher(tmp_path):
    from defvos_core.training.trainer import Trainer

    config = _config(TINY_STATIC, tmp_path, "steps=2", "validation.max_frames=3",
                     "snapshot_every=1", "log_every=1")
    assert config.stage == "static" and config.model.encoder == "lite0"
    torch.manual_seed(0)
    trainer = Trainer(config)
    assert isinstance(trainer.dataset, StaticClipDataset) and trainer.teacher is None
    assert {s.name for s in trainer.dataset.davis} == {"dog-agility", "rollerblade"}
    summary = trainer.run()
    trainer.close()
    assert summary["step"] == 2 and summary["validation"]["step"] == 2
    meta = weights_meta(summary["weights"])
    assert meta["stage"] == "static" and meta["data"]["static_images"] == ["ecssd"]
    assert meta["data"]["static_image_count"] == 800  # ECSSD's training share
    snapshots = sorted((tmp_path / "run" / "snapshots").glob("*.pt"))
    assert [p.name for p in snapshots] == ["step_000001.pt", "step_000002.pt"]
    assert weights_meta(snapshots[0])["steps"] == 1
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    rates = [row for row in logged if "clips_per_second" in row]
    assert len(rates) == 2 and all(0 <= row["data_wait_fraction"] <= 1 for row in rates)
    assert not set(meta["data"]["sequences"]) & set(HOLDOUT_SEQUENCES)
    assert load_model(summary["weights"]).config == config.model
    teacher = Trainer(load_train_config(TINY_TEACHER, [
        f"run_dir={tmp_path / 'teacher'}", f"data.root={DAVIS}", "validation.enabled=false",
        f"init_weights={summary['weights']}"]))
    assert np.isfinite(teacher.train_step(next(iter(teacher.loader)))["total"])


@needs_data
def test_student_stage_mixes_in_unlabelled_synthetic_clips(tmp_path):
    from defvos_core.training.trainer import Trainer

    teacher_config = load_train_config(TINY_TEACHER).model
    teacher_path = tmp_path / "teacher.pt"
    torch.manual_seed(1)
    save_weights(VOSModel(teacher_config), teacher_path, meta={"trained": False})
    config = _config(TINY_STUDENT, tmp_path, f"distill.teacher_weights={teacher_path}",
                     "data.synthetic_fraction=1.0", "validation.enabled=false")
    trainer = Trainer(config)
    batch = next(iter(trainer.loader))
    assert not batch["has_labels"].any() and (batch["labels"][:, 1:] == 255).all()
    assert (batch["num_objects"] >= 1).all()
    terms = trainer.train_step(batch)
    assert np.isfinite(terms["total"]) and terms["grad_norm"] > 0
    assert {"attention", "intra", "inter"} <= set(terms)


@needs_data
def test_fold_split_trains_on_the_other_folds(tmp_path):
    from defvos_core.training.trainer import Trainer

    config = _config(TINY_TEACHER, tmp_path, "data.split=train-fold1", "data.sequences=[]",
                     "validation.split=fold1", "data.holdout=[]", "validation.max_frames=2")
    trainer = Trainer(config)
    assert sorted(s.name for s in trainer.train_sequences) == sorted(fold_split(1)[0])
    assert [s.name for s in trainer.validation_sequences] == list(FOLDS[1])
    leaky = _config(TINY_TEACHER, tmp_path, "validation.split=fold2", "data.holdout=[]",
                    "validation.enabled=false", "data.sequences=[]")
    trained = {s.name for s in Trainer(leaky).train_sequences}
    assert len(trained) == 24 and not trained & set(FOLDS[2])  # validation never trains


def test_restart_schedule_continues_with_a_fresh_warm_up():
    from defvos_core.training.config import OptimConfig
    from defvos_core.training.schedule import build_scheduler, lr_factor

    optim = OptimConfig(lr=1.0, warmup_steps=4)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [parameter], "lr": 1.0}])
    scheduler = build_scheduler(optimizer, optim, 100, start_step=60)
    seen = []
    for _ in range(8):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(lr_factor(60, 100, 4) / 5)  # warm-up from the restart
    assert seen[6] == pytest.approx(lr_factor(66, 100, 4))  # then the schedule at 60 + step
    assert seen[6] < lr_factor(10, 100, 4)


@needs_data
def test_restart_from_weights_runs_the_rest_of_the_steps(tmp_path):
    from defvos_core.training.trainer import Trainer

    model = VOSModel(load_train_config(TINY_STATIC).model)
    save_weights(model, tmp_path / "start.pt", half=True, meta={"trained": True})
    with pytest.raises(ValueError, match="restart_step"):
        _config(TINY_STATIC, tmp_path, "restart_step=4")  # no init_weights
    config = _config(TINY_STATIC, tmp_path, f"init_weights={tmp_path / 'start.pt'}",
                     "restart_step=4", "validation.enabled=false")
    trainer = Trainer(config)
    summary = trainer.run()
    trainer.close()
    assert summary["step"] == config.steps == 6
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert logged == [5, 6]
    meta = weights_meta(summary["weights"])
    assert meta["config"]["restart_step"] == 4 and meta["provenance"]["init_weights"]
