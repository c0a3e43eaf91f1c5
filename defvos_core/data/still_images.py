"""Which photographs train and which are held out: one code-defined rule per dataset.

Static pretraining reads several ECSSD-layout folders (`images/`, `masks/`): ECSSD and DUTS-TR
under `$DEFVOS_DATA` by default. Each folder holds out every `heldout_every(folder)`-th image
in name order (1-based): ECSSD every 5th (200 of 1,000: the prompt head's held-out set
too), DUTS-TR every 20th (526 of 10,539), any other folder every 10th. Training never
reads a held-out image; validation and held-out composites read only those.
"""

from __future__ import annotations

from pathlib import Path

from defvos_core.data.ecssd import StaticImage, read_static_images
from defvos_core.data.roots import DUTS_NAME, ECSSD_NAME, dataset_root

DEFAULT_STILL_DATASETS = (ECSSD_NAME, DUTS_NAME)
HELDOUT_EVERY = {ECSSD_NAME: 5, DUTS_NAME: 20}
OTHER_HELDOUT_EVERY = 10


def heldout_every(root: str | Path) -> int:
    """Return the held-out stride of the folder `root` (by its name)."""
    return HELDOUT_EVERY.get(Path(root).name, OTHER_HELDOUT_EVERY)


def split_still_images(items: list[StaticImage], every: int
                       ) -> tuple[list[StaticImage], list[StaticImage]]:
    """Return (train, held-out) in name order: image i (1-based) held out if i % every == 0."""
    if every < 2:
        raise ValueError(f"held-out stride must be >= 2, got {every}")
    ordered = sorted(items, key=lambda item: item.name)
    return ([item for i, item in enumerate(ordered, start=1) if i % every],
            [item for i, item in enumerate(ordered, start=1) if not i % every])


def still_roots(roots: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """Folders to read: `roots` as given, or ECSSD and DUTS-TR under `$DEFVOS_DATA`."""
    return [Path(root) for root in roots] if roots \
        else [dataset_root(name) for name in DEFAULT_STILL_DATASETS]


def read_still_split(roots: list[str] | tuple[str, ...] = (), part: str = "train"
                     ) -> list[StaticImage]:
    """Return the `part` ("train" or "heldout") images of every folder of `still_roots(roots)`."""
    if part not in ("train", "heldout"):
        raise ValueError(f"part: expected 'train' or 'heldout', got {part!r}")
    chosen: list[StaticImage] = []
    for root in still_roots(roots):
        train, heldout = split_still_images(read_static_images(root), heldout_every(root))
        chosen += train if part == "train" else heldout
    return chosen
