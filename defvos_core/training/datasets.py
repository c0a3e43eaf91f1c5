"""What a training run reads: its DAVIS sequences, validation names and clip dataset.

The static stage trains on `StaticClipDataset` alone (the training share of the ECSSD and
DUTS-TR stills + objects of the run's training sequences); the teacher and student stages
on `VideoClipDataset`, with `data.synthetic_fraction` of the items replaced by synthetic
clips (unlabelled in the student stage, where the teacher's outputs are the only target).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from defvos_core.data.clip_dataset import ClipSamplingConfig, VideoClipDataset
from defvos_core.data.ecssd import StaticImage
from defvos_core.data.sequences import VideoSequence, read_davis
from defvos_core.data.splits import read_named_sequences, resolve_split
from defvos_core.data.static_dataset import MixedClipDataset, StaticClipDataset
from defvos_core.data.still_images import read_still_split, still_roots
from defvos_core.training.config import TrainConfig, ValidationConfig


def read_split_sequences(root: Path, split: str, resolution: str) -> list[VideoSequence]:
    """Sequences of `ImageSets/<split>.txt` if it exists, else of `resolve_split(root, split)`."""
    if (root / "ImageSets" / f"{split}.txt").is_file():
        return read_davis(root, split, resolution)
    return read_named_sequences(root, resolve_split(root, split), resolution)


def validation_names(root: Path, validation: ValidationConfig) -> list[str]:
    """Return the validation sequences: `validation.split` when set, else `.sequences`."""
    return resolve_split(root, validation.split) if validation.split \
        else list(validation.sequences)


def static_images(config: TrainConfig) -> list[StaticImage]:
    """Return the training share of the still images of `data.static.roots` (`still_images`)."""
    return read_still_split(config.data.static.roots, "train")


def uses_static_images(config: TrainConfig) -> bool:
    """Whether the run reads still images (static stage, or a synthetic fraction)."""
    return config.stage == "static" or config.data.synthetic_fraction > 0


def build_dataset(config: TrainConfig, train_sequences: list[VideoSequence],
                  clip: ClipSamplingConfig) -> Dataset:
    """Build the run's training dataset (see the module docstring)."""
    per_epoch = config.data.samples_per_epoch or None
    synthetic = None
    if uses_static_images(config):
        synthetic = StaticClipDataset(
            static_images(config), clip, config.data.static,
            davis_sequences=train_sequences, samples_per_epoch=per_epoch, seed=config.seed,
            labelled=config.stage != "student")
    if config.stage == "static":
        return synthetic
    video = VideoClipDataset(train_sequences, clip, per_epoch or 20 * len(train_sequences),
                             seed=config.seed)
    if synthetic is None:
        return video
    return MixedClipDataset(video, synthetic, config.data.synthetic_fraction, config.seed)


def static_meta(config: TrainConfig) -> dict[str, Any]:
    """Provenance of synthetic clips for the exported weights' meta ({} when none)."""
    if not uses_static_images(config):
        return {}
    return {"static_images": [root.name for root in still_roots(config.data.static.roots)],
            "static_image_count": len(static_images(config)),
            "davis_objects": config.data.static.davis_objects,
            "synthetic_fraction": 1.0 if config.stage == "static"
            else config.data.synthetic_fraction}
