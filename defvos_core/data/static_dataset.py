"""`StaticClipDataset`: synthetic clips from ECSSD images (+ DAVIS objects) as training items.

Items are exactly those of `VideoClipDataset` (see `clip_dataset`): frames (T, 3, H, W)
float32 in [0, 1], labels (T, H, W) int64 (0 bg, 1..K, 255 void), num_objects, name (the
scene: "ecssd/0001" or a DAVIS sequence name), has_labels, frame_indices (the scene's
frame positions: zeros for a still image). Unlabelled items (`labelled=False`) keep only
frame 0's labels (later frames 255), so a teacher's outputs are the only target.
`MixedClipDataset` replaces a fraction of another dataset's items by synthetic ones.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from defvos_core.data.augment import VOID_LABEL, object_ids
from defvos_core.data.clip_dataset import (ClipSamplingConfig, DecodedFrameCache,
                                           sample_clip_positions)
from defvos_core.data.ecssd import StaticImage, read_binary_mask
from defvos_core.data.masks import read_label_map
from defvos_core.data.sequences import VideoSequence
from defvos_core.data.static_clips import ClipRecipe, LayerSource, StaticClipConfig, compose_clip
from defvos_core.data.video_io import read_rgb

MIX_STREAM = 0x5EED  # extra seed word: the mixing draw is independent of the items' own
ATTEMPTS = 3  # recompose (same random stream) while a clip ends up without objects


def _item_rng(seed: int, index: int, epoch: int) -> np.random.Generator:
    """Return the same per-(seed, index, epoch) stream as `VideoClipDataset`."""
    return np.random.default_rng((seed, index) if epoch == 0 else (seed, index, epoch))


class StaticClipDataset(Dataset):
    """Synthetic clips (see the module docstring), reproducible like `VideoClipDataset`.

    Item `index` takes ECSSD image `index % len(images)` as its scene unless a DAVIS scene
    is drawn; randomness per (seed, index, epoch); (epoch, index) tuples from `EpochSampler`
    are accepted. DAVIS objects come only from `davis_sequences` (the run's training split).
    """

    def __init__(self, images: list[StaticImage], clip: ClipSamplingConfig | None = None,
                 config: StaticClipConfig | None = None,
                 davis_sequences: list[VideoSequence] | None = None,
                 samples_per_epoch: int | None = None, seed: int = 0,
                 labelled: bool = True) -> None:
        if not images:
            raise ValueError("StaticClipDataset needs at least one image")
        self.images = list(images)
        self.clip = clip or ClipSamplingConfig()
        self.config = config or StaticClipConfig()
        self.davis = [s for s in davis_sequences or [] if s.labeled_indices] \
            if self.config.davis_objects else []
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.labelled = labelled
        self.epoch = 0
        self._cache = DecodedFrameCache(self.clip.cache_bytes) if self.clip.cache_frames \
            else None

    def __len__(self) -> int:
        return self.samples_per_epoch if self.samples_per_epoch is not None \
            else len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Epoch for int indices in this process (workers: use `EpochSampler.set_epoch`)."""
        self.epoch = epoch

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # workers start with an empty cache
        if self._cache is not None:
            state["_cache"] = DecodedFrameCache(self._cache.max_bytes)
        return state

    # ------------------------------------------------------------------------- sources
    def _cached(self, key: object, load: Callable[[], np.ndarray]) -> np.ndarray:
        return self._cache.get(key, load) if self._cache is not None else load()

    def _still(self, image_index: int) -> LayerSource:
        item = self.images[image_index]
        image = self._cached(("rgb", str(item.image_path)), lambda: read_rgb(item.image_path))
        mask = self._cached(("mask", str(item.mask_path)),
                            lambda: read_binary_mask(item.mask_path))
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{item.mask_path}: mask is {mask.shape}, image "
                             f"{item.image_path} is {image.shape[:2]}")
        return LayerSource([image] * self.clip.num_frames, [mask] * self.clip.num_frames)

    def _davis(self, rng: np.random.Generator) -> tuple[LayerSource, str, list[int]]:
        """One object of a random DAVIS sequence: a snippet or one frame repeated."""
        sequence = self.davis[int(rng.integers(len(self.davis)))]
        usable = sequence.labeled_indices
        num_frames = self.clip.num_frames
        for _ in range(3):  # prefer a first frame that shows an object
            if rng.random() < self.config.davis_snippet_probability:
                positions = sample_clip_positions(len(usable), num_frames, self.clip.max_gap,
                                                  rng)
            else:
                positions = [int(rng.integers(len(usable)))] * num_frames
            indices = [usable[p] for p in positions]
            first = self._labels(sequence, indices[0])
            if object_ids(first).size:
                break
        ids = object_ids(first)
        chosen = int(rng.choice(ids)) if ids.size else 1
        frames = [self._cached(("rgb", str(sequence.frame_paths[i])),
                               lambda i=i: read_rgb(sequence.frame_paths[i])) for i in indices]
        masks = [(self._labels(sequence, i) == chosen).astype(np.uint8) for i in indices]
        return LayerSource(frames, masks), sequence.name, indices

    def _labels(self, sequence: VideoSequence, index: int) -> np.ndarray:
        path = sequence.mask_paths[index]
        return self._cached(("labels", str(path)), lambda: read_label_map(path))

    def _other_image(self, rng: np.random.Generator, scene_index: int) -> int:
        other = int(rng.integers(len(self.images)))
        return other if other != scene_index or len(self.images) == 1 \
            else (other + 1) % len(self.images)

    def recipe(self, index: int, rng: np.random.Generator
               ) -> tuple[ClipRecipe, str, list[int]]:
        """Draw the sources of item `index`: the recipe, the scene's name and frame positions."""
        cfg = self.config
        cap = max(1, min(cfg.max_objects, self.clip.max_objects))
        num_labelled = int(rng.integers(min(cfg.min_objects, cap), cap + 1))
        scene_index = index % len(self.images)
        if self.davis and rng.random() < cfg.davis_scene_probability:
            scene, name, positions = self._davis(rng)
        else:
            scene = self._still(scene_index)
            name, positions = self.images[scene_index].name, [0] * self.clip.num_frames
        scene_labelled = rng.random() < cfg.scene_object_probability
        objects = []
        for _ in range(num_labelled - int(scene_labelled)):
            if self.davis and rng.random() < cfg.davis_object_probability:
                objects.append(self._davis(rng)[0])
            else:
                objects.append(self._still(self._other_image(rng, scene_index)))
        occluders = [self._still(self._other_image(rng, scene_index))] \
            if rng.random() < cfg.occluder_probability else []
        distractor = rng.random() < cfg.distractor_probability
        return ClipRecipe(scene, scene_labelled, objects, occluders, distractor), name, positions

    # --------------------------------------------------------------------------- items
    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        rng = _item_rng(self.seed, index, epoch)
        for _ in range(ATTEMPTS):
            recipe, name, positions = self.recipe(index, rng)
            frames, masks, num_objects = compose_clip(
                recipe, tuple(self.clip.crop_size), self.config, rng,
                self.clip.flip_probability, self.clip.colour_jitter, self.clip.max_objects)
            if num_objects:
                break
        labels = np.stack(masks).astype(np.int64)  # (T, H, W)
        if not self.labelled:
            labels[1:] = VOID_LABEL
        pixels = torch.from_numpy(np.stack(frames))  # (T, H, W, 3) uint8
        return {
            "frames": pixels.permute(0, 3, 1, 2).float().div_(255.0),  # (T, 3, H, W)
            "labels": torch.from_numpy(labels),  # (T, H, W) int64
            "num_objects": num_objects,
            "name": name,
            "has_labels": self.labelled,
            "frame_indices": torch.tensor(positions, dtype=torch.int64),  # (T,)
        }


class MixedClipDataset(Dataset):
    """Items of `primary`, a `fraction` of them replaced by synthetic items.

    Whether item (epoch, index) is synthetic is drawn per (seed, index, epoch); the
    synthetic item has the same (epoch, index). The length is `primary`'s.
    """

    def __init__(self, primary: Dataset, synthetic: Dataset, fraction: float,
                 seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.primary, self.synthetic = primary, synthetic
        self.fraction = fraction
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.primary)

    def set_epoch(self, epoch: int) -> None:
        """Epoch for int indices, forwarded to both datasets."""
        self.epoch = epoch
        for dataset in (self.primary, self.synthetic):
            dataset.set_epoch(epoch)

    def is_synthetic(self, index: int, epoch: int) -> bool:
        """Whether item (epoch, index) comes from the synthetic dataset."""
        draw = np.random.default_rng((self.seed, index, epoch, MIX_STREAM)).random()
        return bool(draw < self.fraction)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        source = self.synthetic if self.is_synthetic(index, epoch) else self.primary
        return source[(epoch, index)]
