"""DAVIS J/F metrics, folder scoring and the evaluate CLI, on hand-made and real masks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from defvos_core.data.masks import read_label_map, write_label_map
from defvos_core.evaluate import main
from defvos_core.evaluation.folders import evaluate_folders
from defvos_core.evaluation.metrics import (
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    db_statistics,
    evaluate_sequence,
    region_jaccard,
    summarize,
)

from data_paths import DAVIS as DAVIS_240P, REPO as REPO_ROOT
REAL_SEQUENCES = ("dog-agility", "rollerblade")  # 13 and 18 frames: the shortest two


def square(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


# ---------------------------------------------------------------- region J


def test_jaccard_of_two_overlapping_squares():
    # 4x4 squares at (0,0) and (2,2): intersection 2x2 = 4, union 16 + 16 - 4 = 28.
    pred = square((8, 8), 0, 0, 4)
    gt = square((8, 8), 2, 2, 4)
    assert region_jaccard(pred, gt) == pytest.approx(4 / 28)


def test_jaccard_both_empty_is_one():
    empty = np.zeros((5, 7), dtype=bool)
    assert region_jaccard(empty, empty) == 1.0


def test_jaccard_ignores_void_pixels():
    # gt 4x4 = 16 px; pred adds a 2x2 blob that lies entirely in void:
    # without void J = 16 / 20, with void the blob is out of both counts, J = 1.
    gt = square((10, 10), 1, 1, 4)
    pred = gt | square((10, 10), 7, 7, 2)
    void = square((10, 10), 6, 6, 4)
    assert region_jaccard(pred, gt) == pytest.approx(16 / 20)
    assert region_jaccard(pred, gt, void) == 1.0


# ---------------------------------------------------------------- boundary F


def test_boundary_of_a_square_is_its_outline_shifted_towards_the_origin():
    # A square at rows/cols 2..4 has its boundary on the outline of rows/cols 1..4
    # (seg2bmap puts boundaries half a pixel towards the origin): 4 * 3 = 12 pixels.
    boundary = boundary_map(square((7, 7), 2, 2, 3))
    expected = np.zeros((7, 7), dtype=bool)
    expected[1:5, 1:5] = True
    expected[2:4, 2:4] = False
    np.testing.assert_array_equal(boundary, expected)
    assert boundary_map(np.ones((4, 6), dtype=bool)).sum() == 0  # the b[-1, -1] = 0 rule


def test_tolerance_is_ceil_of_fraction_of_diagonal():
    assert boundary_tolerance((480, 854)) == 8  # 0.008 * 979.7 = 7.84
    assert boundary_tolerance((240, 427)) == 4  # 0.008 * 489.8 = 3.92
    assert boundary_tolerance((60, 60)) == 1  # 0.008 * 84.9 = 0.68
    assert boundary_tolerance((60, 60), bound_th=3) == 3


def test_f_identical_masks_is_one():
    mask = square((20, 20), 4, 5, 9)
    assert boundary_f_measure(mask, mask) == 1.0


def test_f_prediction_empty_only_is_zero():
    # P = 1, R = 0 -> F = 2 * 1 * 0 / 1 = 0.
    gt = square((20, 20), 4, 5, 9)
    assert boundary_f_measure(np.zeros_like(gt), gt) == 0.0


def test_f_ground_truth_empty_only_is_zero():
    # P = 0, R = 1 -> F = 0.
    pred = square((20, 20), 4, 5, 9)
    assert boundary_f_measure(pred, np.zeros_like(pred)) == 0.0


def test_f_both_empty_is_one():
    empty = np.zeros((20, 20), dtype=bool)
    assert boundary_f_measure(empty, empty) == 1.0


def test_f_one_pixel_shift_within_tolerance_is_one():
    # 10x10 image: tolerance ceil(0.008 * 14.1) = 1, a cross-shaped disk(1).
    # gt square rows/cols 3..5 -> outline rows 2..5, cols 2..5; pred shifted right by
    # one -> outline rows 2..5, cols 3..6. Every outline pixel of one has an outline
    # pixel of the other at itself or one step left/right: P = R = 1.
    gt = square((10, 10), 3, 3, 3)
    pred = square((10, 10), 3, 4, 3)
    assert boundary_tolerance(gt.shape) == 1
    assert boundary_f_measure(pred, gt) == 1.0


def test_f_shift_beyond_tolerance_has_hand_computed_value():
    # 60x60 image: tolerance ceil(0.008 * 84.85) = 1 (cross-shaped disk).
    # gt: 20x20 square rows/cols 10..29 -> outline rows 9..29 x cols 9..29 (80 px).
    # pred: shifted right by 3 -> outline rows 9..29 x cols 12..32 (80 px).
    # Pred outline pixels with a gt outline pixel at distance <= 1:
    #   top row (9, 12..32): cols 12..29 on the gt top row, col 30 next to (9, 29): 19
    #   bottom row (29, 12..32): likewise 19
    #   left column (10..28, 12): only (10, 12) and (28, 12), next to the gt top and
    #     bottom rows: 2
    #   right column (10..28, 32): 3 columns from the gt right column: 0
    # P = 40 / 80 = 0.5; the mirror argument gives R = 40 / 80; F = 0.5.
    gt = square((60, 60), 10, 10, 20)
    pred = square((60, 60), 10, 13, 20)
    assert boundary_f_measure(pred, gt) == pytest.approx(0.5)
    # J of the same pair: intersection 20 x 17 = 340, union 800 - 340 = 460.
    assert region_jaccard(pred, gt) == pytest.approx(340 / 460)


def test_f_ignores_a_prediction_blob_inside_void():
    # Void pixels are cleared in both masks before boundaries are taken, so a blob
    # entirely inside the void region leaves no boundary: F = 1 (0.8 without void:
    # the 4x4 blob adds 16 unmatched boundary pixels to 64 matched -> P = 0.8, R = 1,
    # F = 1.6 / 1.8).
    gt = square((40, 40), 5, 5, 16)
    pred = gt | square((40, 40), 30, 30, 4)
    void = square((40, 40), 28, 28, 8)
    assert boundary_f_measure(pred, gt) == pytest.approx(1.6 / 1.8)
    assert boundary_f_measure(pred, gt, void) == 1.0


def _reference_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixel-by-pixel restatement of the DAVIS seg2bmap rules."""
    height, width = mask.shape
    boundary = np.zeros_like(mask)
    for y in range(height):
        for x in range(width):
            if y == height - 1 and x == width - 1:
                continue
            if y == height - 1:
                neighbours = [mask[y, x + 1]]
            elif x == width - 1:
                neighbours = [mask[y + 1, x]]
            else:
                neighbours = [mask[y, x + 1], mask[y + 1, x], mask[y + 1, x + 1]]
            boundary[y, x] = any(mask[y, x] != other for other in neighbours)
    return boundary


def _reference_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    """F from Euclidean distances to the nearest boundary pixel (disk(r): d <= r)."""
    pred_boundary, gt_boundary = _reference_boundary(pred), _reference_boundary(gt)
    if not pred_boundary.any() or not gt_boundary.any():
        return float(not pred_boundary.any() and not gt_boundary.any())
    distance_to_gt = ndimage.distance_transform_edt(~gt_boundary)
    distance_to_pred = ndimage.distance_transform_edt(~pred_boundary)
    precision = np.mean(distance_to_gt[pred_boundary] <= radius)
    recall = np.mean(distance_to_pred[gt_boundary] <= radius)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("seed", range(6))
def test_f_agrees_with_an_independent_distance_based_reference(seed):
    # Blobby random masks of odd sizes touching the image borders; tolerance 1 from the
    # default 0.008 of a 23x31 diagonal, and explicit tolerances 2 and 3.
    rng = np.random.default_rng(seed)
    shape = (23, 31)
    gt = ndimage.binary_opening(rng.random(shape) < 0.55)
    pred = gt.copy()
    pred[rng.random(shape) < 0.08] ^= True
    pred = np.roll(pred, int(rng.integers(-2, 3)), axis=1)
    np.testing.assert_array_equal(boundary_map(gt), _reference_boundary(gt))
    for bound_th, radius in ((0.008, 1), (2, 2), (3, 3)):
        expected = _reference_f(pred, gt, radius)
        assert boundary_f_measure(pred, gt, bound_th=bound_th) == pytest.approx(expected)


# ---------------------------------------------------------------- statistics


def test_db_statistics_on_a_known_sequence():
    # N = 8: linspace(1, 8, 5) = 1, 2.75, 4.5, 6.25, 8 -> round -> 1, 3, 5, 6, 8 -> -1 ->
    # bin bounds 0, 2, 4, 5, 7; first bin = values[0..2], last bin = values[5..7].
    values = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2])
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(4.9 / 8)
    assert recall == pytest.approx(5 / 8)  # 1.0, 0.9, 0.8, 0.7, 0.6 are > 0.5
    assert decay == pytest.approx(0.9 - 0.3)


def test_db_statistics_skips_nan_in_mean_and_decay_but_counts_it_as_a_miss():
    # N = 4: bounds round(1, 1.75, 2.5, 3.25, 4) - 1 = 0, 1, 2, 2, 3 (2.5 + 1e-10 -> 3):
    # first bin values[0..1] = (nan, 0.8), last bin values[2..3] = (0.6, 0.2).
    values = np.array([np.nan, 0.8, 0.6, 0.2])
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(1.6 / 3)
    assert recall == pytest.approx(2 / 4)
    assert decay == pytest.approx(0.8 - 0.4)


# ---------------------------------------------------------------- sequences


def test_evaluate_sequence_drops_first_and_last_frames():
    gt_frame = square((12, 12), 3, 3, 5).astype(np.uint8)
    gt = [gt_frame] * 5
    wrong = np.zeros_like(gt_frame)
    pred = [wrong, gt_frame, gt_frame, gt_frame, wrong]
    scores = evaluate_sequence(pred, gt)
    assert list(scores) == [1]
    np.testing.assert_array_equal(scores[1]["J"], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(scores[1]["F"], [1.0, 1.0, 1.0])


def test_evaluate_sequence_scores_each_object_and_treats_missing_ones_as_empty():
    # Object 1 is exact; object 2 is predicted in frame 1 only (J = F = 1), absent in
    # frame 2 (J = 0, F = 0: P = 1, R = 0).
    gt_frame = (square((16, 16), 1, 1, 4) + 2 * square((16, 16), 9, 9, 5)).astype(np.uint8)
    only_object_1 = np.where(gt_frame == 1, 1, 0).astype(np.uint8)
    scores = evaluate_sequence([gt_frame, gt_frame, only_object_1, gt_frame], [gt_frame] * 4)
    np.testing.assert_array_equal(scores[1]["J"], [1.0, 1.0])
    np.testing.assert_array_equal(scores[2]["J"], [1.0, 0.0])
    np.testing.assert_array_equal(scores[2]["F"], [1.0, 0.0])
    summary = summarize({"seq": scores})
    assert summary["n_objects"] == 2
    assert summary["J-Mean"] == pytest.approx((1.0 + 0.5) / 2)
    assert summary["sequences"]["seq"]["objects"][2]["J&F"] == pytest.approx(0.5)


def test_evaluate_sequence_object_count_comes_from_the_first_ground_truth_frame():
    # Object 3 appears only in later gt frames: the first frame holds ids 1 and 2, so it
    # is not scored; 255 in the first frame is void, not an object.
    first = np.zeros((8, 8), dtype=np.uint8)
    first[1, 1], first[5, 5], first[7, 0] = 1, 2, 255
    later = first.copy()
    later[3, 3] = 3
    pred = np.where(first == 255, 0, first).astype(np.uint8)
    pred_with_3 = pred.copy()
    pred_with_3[3, 3] = 3
    assert sorted(evaluate_sequence([pred] * 3, [first, later, later])) == [1, 2]
    with pytest.raises(ValueError, match="object id 3"):
        evaluate_sequence([pred, pred_with_3, pred], [first] * 3)


def test_evaluate_sequence_void_follows_the_official_code():
    # gt: object 4x4 (16 px) next to a void band; the prediction spills 2x4 = 8 px into
    # the band. The official code zeroes 255 before building its void mask, so by
    # default the spill counts: J = 16 / 24. With exclude_void it is left out: J = 1.
    gt_frame = np.zeros((12, 12), dtype=np.uint8)
    gt_frame[2:6, 2:6] = 1
    gt_frame[6:8, :] = 255
    pred_frame = (gt_frame == 1).astype(np.uint8)
    pred_frame[6:8, 2:6] = 1
    frames = [pred_frame] * 3
    assert evaluate_sequence(frames, [gt_frame] * 3)[1]["J"][0] == pytest.approx(16 / 24)
    assert evaluate_sequence(frames, [gt_frame] * 3, exclude_void=True)[1]["J"][0] == 1.0


def test_summarize_averages_over_objects_and_combines_j_and_f():
    # Three objects: a/1 (J 1.0, F 0.6), b/1 (J 0.5, F 0.5), b/2 (J 0.0, F 0.2).
    # J-Mean = 1.5 / 3 = 0.5, F-Mean = 1.3 / 3, J&F-Mean = (0.5 + 1.3 / 3) / 2.
    # Per sequence: a = (1.0 + 0.6) / 2 = 0.8; b = mean(0.5, 0.1) = 0.3.
    def constant(value):
        return np.full(4, value)

    results = {
        "a": {1: {"J": constant(1.0), "F": constant(0.6)}},
        "b": {1: {"J": constant(0.5), "F": constant(0.5)},
              2: {"J": constant(0.0), "F": constant(0.2)}},
    }
    summary = summarize(results)
    assert summary["J-Mean"] == pytest.approx(0.5)
    assert summary["F-Mean"] == pytest.approx(1.3 / 3)
    assert summary["J&F-Mean"] == pytest.approx((0.5 + 1.3 / 3) / 2)
    assert summary["J-Recall"] == pytest.approx(1 / 3)  # only a/1 is > 0.5
    assert summary["J-Decay"] == 0.0
    assert summary["sequences"]["a"]["J&F"] == pytest.approx(0.8)
    assert summary["sequences"]["b"]["J&F"] == pytest.approx(0.3)


# ---------------------------------------------------------------- folders and CLI


def _write_sequence(folder: Path, frames: list[np.ndarray]) -> None:
    for index, labels in enumerate(frames):
        write_label_map(folder / f"{index:05d}.png", labels)


@pytest.fixture
def tiny_davis(tmp_path: Path) -> tuple[Path, Path]:
    """Build roots with sequences 'exact' (J = F = 1) and 'shifted' (J 340/460, F 0.5)."""
    gt_frame = square((60, 60), 10, 10, 20).astype(np.uint8)
    shifted = square((60, 60), 10, 13, 20).astype(np.uint8)
    _write_sequence(tmp_path / "gt" / "exact", [gt_frame] * 4)
    _write_sequence(tmp_path / "gt" / "shifted", [gt_frame] * 4)
    _write_sequence(tmp_path / "pred" / "exact", [gt_frame] * 4)
    _write_sequence(tmp_path / "pred" / "shifted", [shifted] * 4)
    return tmp_path / "pred", tmp_path / "gt"


def test_evaluate_folders_reads_sequences_and_single_sequence_folders(tiny_davis):
    pred_root, gt_root = tiny_davis
    results = evaluate_folders(pred_root, gt_root)
    assert list(results) == ["exact", "shifted"]
    np.testing.assert_allclose(results["shifted"][1]["J"], [340 / 460] * 2)
    np.testing.assert_allclose(results["shifted"][1]["F"], [0.5] * 2)
    single = evaluate_folders(pred_root / "shifted", gt_root / "shifted")
    assert list(single) == ["shifted"]
    np.testing.assert_allclose(single["shifted"][1]["F"], [0.5] * 2)
    assert list(evaluate_folders(pred_root, gt_root, ["exact"])) == ["exact"]


def test_evaluate_folders_reports_missing_and_mis_sized_predictions(tiny_davis):
    pred_root, gt_root = tiny_davis
    (pred_root / "exact" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"exact/00002\.png"):
        evaluate_folders(pred_root, gt_root)
    # The first and last frames are not scored, so their predictions may be missing.
    (pred_root / "shifted" / "00000.png").unlink()
    assert evaluate_folders(pred_root, gt_root, ["shifted"])["shifted"][1]["F"][0] == 0.5
    write_label_map(pred_root / "shifted" / "00001.png", np.zeros((30, 60), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"shifted/00001\.png.*\(30, 60\).*\(60, 60\)"):
        evaluate_folders(pred_root, gt_root, ["shifted"])
    with pytest.raises(FileNotFoundError, match="nope"):
        evaluate_folders(pred_root, gt_root, ["nope"])


def test_cli_prints_table_and_writes_json_and_plot(tiny_davis, tmp_path, capsys):
    pred_root, gt_root = tiny_davis
    json_path, plot_path = tmp_path / "out" / "summary.json", tmp_path / "out" / "jf.png"
    code = main(["--pred", str(pred_root), "--gt", str(gt_root),
                 "--json", str(json_path), "--plot", str(plot_path)])
    assert code == 0
    table = capsys.readouterr().out
    assert "exact" in table and "shifted" in table and "J&F-Mean" in table
    summary = json.loads(json_path.read_text())
    # exact: J = F = 1; shifted: J = 340/460, F = 0.5.
    assert summary["J-Mean"] == pytest.approx((1 + 340 / 460) / 2)
    assert summary["F-Mean"] == pytest.approx(0.75)
    assert summary["sequences"]["shifted"]["J&F"] == pytest.approx((340 / 460 + 0.5) / 2)
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_missing_folder_exits_2_naming_the_path(tiny_davis, tmp_path, capsys):
    _, gt_root = tiny_davis
    missing = tmp_path / "no_such_predictions"
    assert main(["--pred", str(missing), "--gt", str(gt_root)]) == 2
    error = capsys.readouterr().err.strip()
    assert str(missing) in error and "\n" not in error


def test_cli_runs_as_a_module(tiny_davis):
    pred_root, gt_root = tiny_davis
    completed = subprocess.run(
        [sys.executable, "-m", "defvos_core.evaluate", "--pred", str(pred_root),
         "--gt", str(gt_root), "--sequences", "exact"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "exact" in completed.stdout and "shifted" not in completed.stdout


@pytest.fixture
def davis_annotations() -> Path:
    annotations = DAVIS_240P / "Annotations" / "240p"
    missing = [name for name in REAL_SEQUENCES if not (annotations / name).is_dir()]
    if missing:
        pytest.skip(f"DAVIS 2016 240p sequences {missing} not found under {annotations}")
    return annotations


def test_cli_on_real_sequences_scored_against_themselves(davis_annotations, tmp_path):
    json_path = tmp_path / "self.json"
    code = main(["--pred", str(davis_annotations), "--gt", str(davis_annotations),
                 "--sequences", ",".join(REAL_SEQUENCES), "--json", str(json_path)])
    assert code == 0
    summary = json.loads(json_path.read_text())
    assert list(summary["sequences"]) == list(REAL_SEQUENCES)
    assert summary["J&F-Mean"] == 1.0
    assert summary["J-Mean"] == 1.0 and summary["F-Mean"] == 1.0


def test_cli_on_real_sequences_against_the_first_frame_copied(davis_annotations, tmp_path):
    # The trivial "copy the first mask" baseline: far from perfect, yet not zero.
    pred_root = tmp_path / "first_frame_copy"
    for name in REAL_SEQUENCES:
        gt_files = sorted((davis_annotations / name).glob("*.png"))
        first = read_label_map(gt_files[0])
        for gt_file in gt_files:
            write_label_map(pred_root / name / gt_file.name, first)
    json_path = tmp_path / "copy.json"
    code = main(["--pred", str(pred_root), "--gt", str(davis_annotations),
                 "--sequences", ",".join(REAL_SEQUENCES), "--json", str(json_path)])
    assert code == 0
    summary = json.loads(json_path.read_text())
    assert 0.0 < summary["J&F-Mean"] < 0.7
    for row in summary["sequences"].values():
        assert 0.0 < row["J&F"] < 0.9
