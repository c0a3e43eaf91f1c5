"""Score DAVIS-layout folders of palette PNG label maps against ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from defvos_core.data.masks import read_label_map
from defvos_core.evaluation.metrics import evaluate_sequence


def evaluate_folders(
    pred_root: str | Path,
    gt_root: str | Path,
    sequences: Iterable[str] | None = None,
) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """Per-frame J and F of every object of every sequence, read from folders.

    Layout: `gt_root/<seq>/<stem>.png` and `pred_root/<seq>/<stem>.png`, matched by file
    stem. If `gt_root` itself holds PNGs it is one sequence (named after the folder) and
    `pred_root` must hold that sequence's PNGs directly. `sequences` restricts the
    sequences scored (default: every sub-folder of `gt_root` that holds PNGs).

    Every scored ground-truth frame (all but the first and last) needs a prediction of the
    same size; the first and last predictions may be absent, as they are not scored.

    Raises FileNotFoundError naming the missing folder or file, ValueError naming the
    file or sequence at fault. Returns {sequence: evaluate_sequence(...)}.
    """
    pred_root, gt_root = Path(pred_root), Path(gt_root)
    for root, role in ((gt_root, "ground-truth"), (pred_root, "prediction")):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: {role} folder not found")

    if _png_files(gt_root):
        folders = {gt_root.name: (pred_root, gt_root)}
        if sequences is not None and set(sequences) - {gt_root.name}:
            raise ValueError(
                f"{gt_root}: a single-sequence folder cannot be restricted to "
                f"sequences {sorted(set(sequences))}"
            )
    else:
        names = _sequence_names(gt_root) if sequences is None else list(sequences)
        if not names:
            raise FileNotFoundError(f"{gt_root}: no PNG files and no sequence folders with PNGs")
        folders = {name: (pred_root / name, gt_root / name) for name in names}

    return {name: _evaluate_one(pred_dir, gt_dir) for name, (pred_dir, gt_dir) in folders.items()}


def _evaluate_one(pred_dir: Path, gt_dir: Path) -> dict[int, dict[str, np.ndarray]]:
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir}: ground-truth sequence folder not found")
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: prediction sequence folder not found")
    gt_files = _png_files(gt_dir)
    if len(gt_files) < 3:
        raise ValueError(
            f"{gt_dir}: needs at least 3 PNG frames (first and last are not scored), "
            f"found {len(gt_files)}"
        )
    gt_labels = [read_label_map(path) for path in gt_files]
    for path, labels in zip(gt_files, gt_labels):
        if labels.shape != gt_labels[0].shape:
            raise ValueError(
                f"{path}: size {labels.shape} differs from {gt_files[0].name} "
                f"{gt_labels[0].shape} in the same sequence"
            )

    pred_labels = []
    last = len(gt_files) - 1
    for index, (gt_path, gt) in enumerate(zip(gt_files, gt_labels)):
        pred_path = pred_dir / f"{gt_path.stem}.png"
        if not pred_path.is_file():
            if index in (0, last):
                pred_labels.append(np.zeros_like(gt))
                continue
            raise FileNotFoundError(f"{pred_path}: prediction missing for {gt_path}")
        pred = read_label_map(pred_path)
        if pred.shape != gt.shape:
            raise ValueError(
                f"{pred_path}: prediction size {pred.shape} differs from ground truth "
                f"{gt_path} {gt.shape}"
            )
        pred_labels.append(pred)

    try:
        return evaluate_sequence(pred_labels, gt_labels)
    except ValueError as error:
        raise ValueError(f"{pred_dir}: {error}") from error


def _png_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() == ".png"
                  and path.is_file())


def _sequence_names(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if path.is_dir() and _png_files(path))
