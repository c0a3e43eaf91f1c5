"""Box and click seeds: the prompt head in the weights file, the tracker API, the CLI, errors."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from defvos_core.build import build_tracker
from defvos_core.config import PromptConfig, TrackerConfig, student_config
from defvos_core.data.folds import fold_split
from defvos_core.data.masks import read_label_map, write_label_map
from defvos_core.data.prompt_sampling import center_click, jitter_box, mask_box, sample_clicks
from defvos_core.data.video_io import list_frame_files, read_rgb
from defvos_core.errors import SeedError
from defvos_core.evaluation.metrics import region_jaccard
from defvos_core.inference.backend import TorchBackend
from defvos_core.inference.prompts import PromptSeeder, check_prompts
from defvos_core.inference.tracker import Tracker
from defvos_core.model.checkpoint import (
    DEFAULT_STUDENT_WEIGHTS,
    load_model,
    read_weights,
    save_weights,
)
from defvos_core.model.prompt_head import ObjectPrompt, prompt_maps
from defvos_core.model.prompt_weights import add_prompt_head, load_prompt_head, new_prompt_head
from defvos_core.model.vos_model import VOSModel
from defvos_core.model.checkpoint import file_sha256
from defvos_core.segment import main as segment_main
from data_paths import DATA, DAVIS, ECSSD, missing
from tracker_helpers import SpyBackend

torch.set_num_threads(1)
SAMPLE = Path(__file__).resolve().parents[1] / "defvos_core" / "assets" / "sample" / "bear"
FRAMES = list_frame_files(SAMPLE / "frames")
# Bounds for the shipped student + head on the sample clip (bear, held out from the head's
# and the tracker's training). Measured 0.82 (tight box) / 0.86 (one centre click) on the
# seed frame and >= 0.84 on every later frame; the bounds leave room for numerical drift, not
# for a head that ignores its prompt (the box covers 20 % of the frame, the bear 12 %).
SEED_IOU = 0.75
LATER_IOU = 0.70


def truth(index: int) -> np.ndarray:
    return read_label_map(SAMPLE / "masks" / f"{FRAMES[index].stem}.png") == 1


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Return a tiny random student without a head, and the same with a random head."""
    torch.manual_seed(0)
    model = VOSModel(student_config(pretrained_encoder=False, embed_dim=32, decoder_dim=16))
    folder = tmp_path_factory.mktemp("weights")
    save_weights(model, folder / "tiny.pt", meta={"trained": False})
    add_prompt_head(folder / "tiny.pt", new_prompt_head(model.config), folder / "tiny_head.pt",
                    {"trained": False, "command": "test"})
    return folder / "tiny.pt", folder / "tiny_head.pt"


@pytest.fixture(scope="module")
def shipped():
    return build_tracker(None, TrackerConfig())


# ----------------------------------------------------------------------------- prompt maps
def test_prompt_maps_mark_the_box_its_outline_and_the_clicks():
    maps = prompt_maps([ObjectPrompt(box=(8, 16, 40, 32)),
                        ObjectPrompt(clicks=[(10, 10, 1), (50, 30, 0)])], (48, 64))
    assert maps.shape == (2, 6, 12, 16)
    filled, outline = maps[0, 0], maps[0, 1]
    assert filled.sum() == 8 * 4 and filled[4:8, 2:10].all()  # cells with centres inside
    assert outline.sum() == 8 * 4 - 6 * 2 and not outline[5:7, 3:9].any()
    assert maps[0, 2:].abs().sum() == 0 and maps[1, :2].abs().sum() == 0
    for channel, cell in ((2, (2, 2)), (3, (7, 12)), (4, (2, 2)), (5, (7, 12))):
        bump = maps[1, channel]
        assert np.unravel_index(int(bump.argmax()), bump.shape) == cell and bump.max() == 1
    assert maps[1, 4, 11, 15] > 0.1 > maps[1, 2, 11, 15]  # the broad bumps reach further


def test_prompts_drawn_from_a_mask_stay_on_it_or_off_it():
    mask = np.zeros((60, 80), bool)
    mask[10:40, 20:50] = True
    rng = np.random.default_rng(0)
    assert mask_box(mask) == (20, 10, 50, 40)
    for _ in range(20):
        x0, y0, x1, y1 = jitter_box(mask_box(mask), mask.shape, rng)
        assert abs(x0 - 20) <= 3 and abs(x1 - 50) <= 3 and abs(y0 - 10) <= 3 and abs(y1 - 40) <= 3
        clicks = sample_clicks(mask, rng)
        positives = [c for c in clicks if c[2] == 1]
        assert 1 <= len(positives) <= 3 and len(clicks) - len(positives) <= 2
        for x, y, label in clicks:
            assert mask[int(y), int(x)] == bool(label)
    assert center_click(mask)[:2] in [(34.0, 24.0), (35.0, 25.0), (34.0, 25.0), (35.0, 24.0)]


# ------------------------------------------------------------------------ the weights file
def test_old_weights_load_strictly_and_the_writer_adds_only_the_head(tiny_weights):
    plain, with_head = tiny_weights
    assert load_model(plain).prompt_head is None
    assert load_prompt_head(plain) is None
    model = load_model(with_head)  # strict: every tensor of the file, nothing missing
    assert model.config.prompt_head and model.prompt_head is not None
    before, after = read_weights(plain), read_weights(with_head)
    assert all(torch.equal(value, after["state_dict"][key])
               for key, value in before["state_dict"].items())
    assert {k for k in after["state_dict"] if k not in before["state_dict"]} == {
        f"prompt_head.{k}" for k in model.prompt_head.state_dict()}
    record = after["meta"]["prompt_head"]
    assert record["parent_sha256"] == file_sha256(plain) and record["command"] == "test"
    assert after["meta"]["trained"] is False  # the parent's metadata is kept
    head = load_prompt_head(with_head)
    assert all(torch.equal(value, model.prompt_head.state_dict()[key])
               for key, value in head.state_dict().items())


def test_the_shipped_student_carries_a_trained_head_recorded_by_code():
    record = read_weights(DEFAULT_STUDENT_WEIGHTS)["meta"]["prompt_head"]
    assert record["trained"] is True and record["steps"] >= 1000
    assert "train_prompts" in record["command"] and len(record["parent_sha256"]) == 64
    assert "bear" not in record["data"]["davis"]["sequences"]  # the sample clip is held out
    assert record["data"]["ecssd"]["images"] == 800


# ------------------------------------------------------------------------------ tracker API
def seed_then_track(tracker, frames: int = 21, **seed) -> tuple[float, list[float]]:
    """Return the IoU with the truth on the seed frame and on every 10th later frame."""
    result = tracker.add_objects(read_rgb(FRAMES[0]), **seed)
    first = region_jaccard(result.labels == 1, truth(0))
    later = []
    for index in range(1, frames):
        result = tracker.step(read_rgb(FRAMES[index]))
        if index % 10 == 0:
            later.append(region_jaccard(result.labels == 1, truth(index)))
    return first, later


@pytest.mark.parametrize("kind", ["box", "click"])
def test_box_or_click_seeding_segments_the_bear(shipped, kind):
    seed = {"boxes": {1: mask_box(truth(0))}} if kind == "box" else \
        {"points": {1: [center_click(truth(0))]}}
    shipped.reset()
    first, later = seed_then_track(shipped, **seed)
    assert first >= SEED_IOU, first
    assert min(later) >= LATER_IOU, later


def test_grabcut_method_is_a_config_choice(shipped):
    tracker = build_tracker(None, replace(TrackerConfig(),
                                          prompts=PromptConfig(box_method="grabcut")))
    result = tracker.add_objects(read_rgb(FRAMES[0]), boxes={1: mask_box(truth(0))})
    assert region_jaccard(result.labels == 1, truth(0)) >= SEED_IOU


def test_mask_boxes_and_points_mix_in_one_call(shipped):
    frame = read_rgb(FRAMES[0])
    mask = np.zeros(frame.shape[:2], np.uint8)
    mask[5:40, 5:60] = 3  # a patch of wall
    shipped.reset()
    result = shipped.add_objects(frame, mask, boxes={1: mask_box(truth(0))},
                                 points={2: [(400, 200, 1), (300, 200, 0)]})
    assert result.object_ids == [1, 2, 3]
    assert np.array_equal(result.labels == 3, mask == 3)  # the mask seed is kept as given
    assert region_jaccard(result.labels == 1, truth(0)) >= SEED_IOU
    assert result.area[2] > 0 and result.labels[200, 400] == 2
    result = shipped.step(read_rgb(FRAMES[1]))
    assert set(np.unique(result.labels)) <= {0, 1, 2, 3} and result.area[1] > 0


@pytest.mark.parametrize("seed, kind, message", [
    ({"boxes": {1: (50, 50, 50, 90)}}, "prompt_box", "empty"),
    ({"boxes": {1: (500, 10, 600, 90)}}, "prompt_box", "outside"),
    ({"boxes": {1: (1, 2, 3)}}, "prompt_box", "4 finite numbers"),
    ({"boxes": {1: (0, 0, float("nan"), 9)}}, "prompt_box", "finite"),
    ({"points": {1: [(10, 10, 0)]}}, "prompt_points", "no positive point"),
    ({"points": {1: [(10, 300)]}}, "prompt_points", "outside"),
    ({"points": {1: []}}, "prompt_points", "non-empty"),
    ({"points": {1: [(10, 10, 2)]}}, "prompt_points", "label"),
    ({"boxes": {1: (0, 0, 9, 9)}, "points": {1: [(5, 5)]}}, "seed_ids", "given twice"),
    ({"boxes": {0: (0, 0, 9, 9)}}, "seed_ids", "1..254"),
    ({}, "seed_empty", "no seed"),
])
def test_bad_prompts_are_seed_errors_with_their_kind(tiny_weights, seed, kind, message):
    tracker = build_tracker(tiny_weights[1], TrackerConfig(size=None))
    with pytest.raises(SeedError, match=message) as error:
        tracker.add_objects(read_rgb(FRAMES[0]), **seed)
    assert error.value.kind == kind
    assert tracker.object_ids == [] and tracker.frame_index == -1  # nothing changed


def test_an_id_in_the_mask_and_in_the_prompts_is_refused(tiny_weights):
    tracker = build_tracker(tiny_weights[1], TrackerConfig(size=None))
    mask = np.zeros((240, 427), np.uint8)
    mask[:10, :10] = 1
    with pytest.raises(SeedError, match="given twice") as error:
        tracker.add_objects(read_rgb(FRAMES[0]), mask, boxes={1: (20, 20, 60, 60)})
    assert error.value.kind == "seed_ids"


def test_a_box_partly_outside_the_frame_is_clipped(tiny_weights):
    tracker = build_tracker(tiny_weights[0],
                            TrackerConfig(size=None, prompts=PromptConfig(box_method="grabcut")))
    result = tracker.add_objects(read_rgb(FRAMES[0]), boxes={1: (-50, 100, 200, 400)})
    ys, xs = np.nonzero(result.labels == 1)
    assert len(ys) and ys.min() >= 100 and xs.max() < 200


def test_weights_without_a_head_say_so(tiny_weights):
    tracker = build_tracker(tiny_weights[0], TrackerConfig(size=None))
    with pytest.raises(ValueError, match="no prompt head"):
        tracker.add_objects(read_rgb(FRAMES[0]), boxes={1: (20, 20, 60, 60)})


@pytest.mark.parametrize("method", ["head", "head+refine"])
def test_a_prompted_seed_frame_is_encoded_once_with_unchanged_masks(tiny_weights, method):
    config = TrackerConfig(size=None, prompts=PromptConfig(box_method=method))
    spy = SpyBackend(TorchBackend(load_model(tiny_weights[1])))
    tracker = Tracker(spy, config)
    frames = [read_rgb(path) for path in FRAMES[:2]]
    box = {1: (100, 60, 300, 200)}
    seeded = tracker.add_objects(frames[0], boxes=box)
    assert spy.calls.count("encode") == 1
    # The same masks as seeding with the label map the box makes (two encodes).
    reference = Tracker(TorchBackend(load_model(tiny_weights[1])), config)
    labels = PromptSeeder(reference.backend, config).label_map(
        frames[0], None, check_prompts(box, None, frames[0].shape))
    assert np.array_equal(seeded.labels, reference.add_objects(frames[0], labels).labels)
    assert np.array_equal(tracker.step(frames[1]).labels, reference.step(frames[1]).labels)


def test_onnxruntime_backend_runs_the_same_head_on_its_encoder_features(tiny_weights, tmp_path):
    frame = read_rgb(FRAMES[0])[:96, :128].copy()
    seed = {"boxes": {1: (10, 10, 60, 70)}, "points": {2: [(100, 40, 1), (90, 80, 0)]}}
    labels = {}
    for backend in ("torch", "onnxruntime"):
        config = replace(TrackerConfig(size=None, backend=backend),
                         prompts=PromptConfig(box_method="head+refine"))
        config.onnx.cache_dir = str(tmp_path)
        tracker = build_tracker(tiny_weights[1], config)
        assert tracker.backend.name == backend and tracker.prompts.head() is not None
        labels[backend] = tracker.add_objects(frame, **seed).labels
    agree = (labels["torch"] == labels["onnxruntime"]).mean()
    assert agree >= 0.99 and {1, 2} <= set(np.unique(labels["torch"]))  # a random head


# ----------------------------------------------------------------------------------- CLI
@pytest.fixture()
def clip(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for path in FRAMES[:4]:
        shutil.copy(path, frames / path.name)
    return frames


def expect_error(argv, message, capsys):
    assert segment_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_cli_box_and_point_seeds_segment_the_bear(tmp_path, clip):
    box = ",".join(str(int(v)) for v in mask_box(truth(0)))
    x, y, _ = center_click(truth(0))
    for name, flags in (("box", ["--box", box]), ("point", ["--point", f"{x:.0f},{y:.0f}"])):
        out = tmp_path / name
        assert segment_main(["--frames", str(clip), "--out", str(out), "--no-video"]
                            + flags) == 0
        masks = [read_label_map(path) for path in sorted(out.glob("*.png"))]
        assert len(masks) == 4
        assert region_jaccard(masks[0] == 1, truth(0)) >= SEED_IOU
        assert region_jaccard(masks[-1] == 1, truth(3)) >= LATER_IOU


def test_cli_mixes_a_mask_boxes_and_points_numbering_them_in_order(tmp_path, clip):
    seed = tmp_path / "seed.png"
    wall = np.zeros((240, 427), np.uint8)
    wall[5:40, 5:60] = 1
    write_label_map(seed, wall)
    out = tmp_path / "out"
    assert segment_main(["--frames", str(clip), "--out", str(out), "--no-video", "--seed",
                         str(seed), "--box", "100,60,330,220", "--point", "400,200;300,200,0",
                         "--box-method", "grabcut", "--points-method", "grabcut"]) == 0
    first = read_label_map(out / "00000.png")
    assert set(np.unique(first)) == {0, 1, 2, 3}  # mask 1, then the box 2, the point 3
    assert np.array_equal(first == 1, wall == 1) and first[200, 400] == 3


def test_cli_bad_boxes_and_points_exit_2_with_one_line(tmp_path, clip, tiny_weights, capsys):
    common = ["--frames", str(clip), "--out", str(tmp_path / "o"), "--no-video"]
    expect_error(common + ["--box", "10,20,30"], "--box '10,20,30'", capsys)
    expect_error(common + ["--box", "50,50,40,90"], "empty", capsys)
    expect_error(common + ["--box", "500,10,600,90"], "outside", capsys)
    expect_error(common + ["--point", "10,10,0"], "no positive point", capsys)
    expect_error(common + ["--point", "10,900"], "outside", capsys)
    expect_error(common + ["--point", "a,b"], "--point 'a,b'", capsys)
    expect_error(common, "no seed", capsys)
    expect_error(common + ["--box", "10,20,30,40", "--weights", str(tiny_weights[0])],
                 "no prompt head", capsys)


# ------------------------------------------------------------------ training and evaluation
needs_data = pytest.mark.skipif(bool(missing(DAVIS, ECSSD)), reason=missing(DAVIS, ECSSD))


@needs_data
def test_train_prompts_writes_the_student_with_a_head_and_its_record(tiny_weights, tmp_path,
                                                                     capsys):
    from defvos_core.train_prompts import main as train_main

    out = tmp_path / "with_head.pt"
    assert train_main(["--out", str(out), "--weights", str(tiny_weights[0]),
                       "--set", f"davis_root={DAVIS}",
                       "--set", f"ecssd_root={ECSSD}", "--set", "fold=0",
                       "--set", "ecssd_images=2", "--set", "davis_frame_step=1000",
                       "--set", "steps=2", "--set", "batch_size=2", "--set", "threads=1",
                       "--set", f"cache_dir={tmp_path / 'cache'}"]) == 0
    model = load_model(out)
    assert model.prompt_head is not None
    record = read_weights(out)["meta"]["prompt_head"]
    assert record["steps"] == 2 and record["parent_sha256"] == file_sha256(tiny_weights[0])
    assert record["data"]["davis"]["sequences"] == fold_split(0)[0]
    assert record["data"]["ecssd"]["images"] == 2 and record["data"]["composites"] > 0
    assert "--set fold=0" in record["command"]
    assert train_main(["--out", str(out), "--set", "fold=9"]) == 2
    assert "fold" in capsys.readouterr().err


@needs_data
def test_evaluate_prompts_prints_a_table(tiny_weights, capsys):
    from defvos_core.evaluate_prompts import main as evaluate_main

    assert evaluate_main(["--parts", "stills", "--stills", "2", "--data", str(DATA),
                          "--weights", str(tiny_weights[1]), "--methods", "head,grabcut",
                          "--kinds", "box,click", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "seed IoU on 2 held-out ECSSD images" in lines[0]
    assert sorted(line.split()[:2] for line in lines[2:]) == [
        ["grabcut", "box"], ["grabcut", "click"], ["head", "box"], ["head", "click"]]


@needs_data
def test_overlap_composite_holds_two_objects_with_overlapping_boxes():
    from defvos_core.data.ecssd import read_static_images
    from defvos_core.data.sequences import read_davis
    from defvos_core.evaluation.composites import overlap_composite

    sequence = read_davis(DAVIS, "train", "240p", ["bear"])[0]
    clip = overlap_composite(sequence, read_static_images(ECSSD)[4])
    assert len(clip.frames) == len(sequence) == len(clip.labels)
    first = clip.labels[0]
    assert set(np.unique(first)) == {0, 1, 2}
    a, b = mask_box(first == 1), mask_box(first == 2)
    assert min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
    assert not np.array_equal(clip.labels[0] == 2, clip.labels[10] == 2)  # it moves
