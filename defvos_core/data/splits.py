"""Named sequence splits of the bundled DAVIS-2016 240p data, defined in one place.

`HOLDOUT_SEQUENCES` are never trained on: the training config excludes them and
`python -m defvos_core.evaluate --split val` scores them. `bear` is also the shipped sample.
"""

from __future__ import annotations

from pathlib import Path

from defvos_core.data.folds import parse_fold_split
from defvos_core.data.sequences import VideoSequence
from defvos_core.data.video_io import list_frame_files

#: Held-out validation sequences of `davis2016-train-240p` (5 of its 30 sequences).
HOLDOUT_SEQUENCES: tuple[str, ...] = ("bear", "car-turn", "hike", "mallard-water", "tennis")


def resolve_split(root: str | Path, split: str) -> list[str]:
    """Sequence names of `split` in a DAVIS-layout `root`.

    `val`: the held-out list; `train`: every sequence of `ImageSets/train.txt` except the
    held-out ones; `fold0`..`fold4`: the 6 validation sequences of that fold and
    `train-fold0`..`train-fold4` the other 24 (`defvos_core.data.folds`); any other value: a
    path to an ImageSets-style file (one name a line), or the name of a file
    `ImageSets/<split>.txt` under `root`.
    """
    root = Path(root)
    if split == "val":
        return list(HOLDOUT_SEQUENCES)
    if split == "train":
        return [name for name in _read_names(root / "ImageSets" / "train.txt")
                if name not in HOLDOUT_SEQUENCES]
    fold_names = parse_fold_split(split)
    if fold_names is not None:
        return fold_names
    as_path = Path(split)
    if as_path.is_file():
        return _read_names(as_path)
    candidate = root / "ImageSets" / f"{split}.txt"
    if candidate.is_file():
        return _read_names(candidate)
    raise FileNotFoundError(f"split {split!r}: not 'val', 'train' or a fold, not a file, and "
                            f"{candidate} does not exist")


def read_named_sequences(root: str | Path, names: list[str],
                         resolution: str = "240p") -> list[VideoSequence]:
    """DAVIS-layout sequences by name (any split file): frames + every annotation PNG."""
    root = Path(root)
    sequences = []
    for name in names:
        frame_dir = root / "JPEGImages" / resolution / name
        mask_dir = root / "Annotations" / resolution / name
        if not frame_dir.is_dir():
            raise FileNotFoundError(f"{frame_dir}: frames of sequence {name!r} not found")
        frames = list_frame_files(frame_dir)
        index_of_stem = {path.stem: index for index, path in enumerate(frames)}
        masks = {index_of_stem[path.stem]: path for path in sorted(mask_dir.glob("*.png"))
                 if path.stem in index_of_stem} if mask_dir.is_dir() else {}
        sequences.append(VideoSequence(name, frames, masks))
    return sequences


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    names = [line.strip() for line in path.read_text().splitlines()]
    return [name for name in names if name and not name.startswith("#")]
