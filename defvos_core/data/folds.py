"""Five cross-validation folds over the 30 sequences of `davis2016-train-240p`, fixed here.

Fold k's 6 sequences are its validation set; the other 24 train (`fold_split(k)`).
`resolve_split` names them `fold0`..`fold4` and `train-fold0`..`train-fold4`.

The lists were balanced once and are never recomputed: each fold holds
- 3 people/sport sequences and 3 animal or vehicle sequences;
- exactly one of `splits.HOLDOUT_SEQUENCES`, so the legacy `val` set spreads over the folds;
- at most one short sequence (< 30 frames: dog-agility, motorbike, rollerblade, soccerball,
  surf), and 207-212 frames in all (1,044 over the 30);
- `mallard-fly` and `mallard-water` together (the same ducks on the same pond: splitting
  them would validate on a scene seen in training).
"""

from __future__ import annotations

NUM_FOLDS = 5

#: Validation sequences of each fold (every DAVIS-2016 train sequence in exactly one).
FOLDS: tuple[tuple[str, ...], ...] = (
    ("bear", "bmx-bumps", "drift-turn", "paragliding", "rollerblade", "train"),
    ("boat", "car-turn", "horsejump-low", "rhino", "soccerball", "swing"),
    ("dog-agility", "hockey", "kite-walk", "mallard-fly", "mallard-water", "stroller"),
    ("breakdance-flare", "elephant", "motocross-bumps", "scooter-gray", "surf", "tennis"),
    ("bus", "dance-jump", "flamingo", "hike", "lucia", "motorbike"),
)

#: Every sequence of the folds, in fold order.
FOLD_SEQUENCES: tuple[str, ...] = tuple(name for fold in FOLDS for name in fold)


def fold_split(k: int) -> tuple[list[str], list[str]]:
    """Return (train_names, val_names) of fold `k`: the other 24 sequences and its 6."""
    if not 0 <= k < NUM_FOLDS:
        raise ValueError(f"fold index must be in 0..{NUM_FOLDS - 1}, got {k}")
    validation = list(FOLDS[k])
    return [name for name in FOLD_SEQUENCES if name not in FOLDS[k]], validation


def parse_fold_split(split: str) -> list[str] | None:
    """Names of split `fold<k>` (validation) or `train-fold<k>` (training); None otherwise."""
    train = split.startswith("train-fold")
    suffix = split[len("train-fold"):] if train else \
        split[len("fold"):] if split.startswith("fold") else None
    if suffix is None or not suffix.isdigit():
        return None
    train_names, val_names = fold_split(int(suffix))
    return train_names if train else val_names
