"""Training clips from `VideoSequence`s: frame sampling, decoded-frame cache, augmentation.

An item is a dict (collated by the default collate into a batch dimension B in front):
    frames         float32 (T, 3, H, W) RGB in [0, 1]
    labels         int64   (T, H, W): 0 bg, 1..K objects of frame 0 (consecutive, K <=
                   max_objects), 255 void; objects absent from frame 0 count as background
    num_objects    int K
    name           str, the sequence name
    has_labels     bool; False for unlabeled footage: labels of frames > 0 are all 255 and
                   frame 0 is 255 unless it has an annotation (the teacher supplies masks)
    frame_indices  int64 (T,), positions in the sequence's `frame_paths` (non-decreasing)
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from defvos_core.data.augment import (VOID_LABEL, augment_clip, colour_jitter, compose_objects,
                                      object_ids, static_image_clip)
from defvos_core.data.masks import read_label_map
from defvos_core.data.sequences import VideoSequence
from defvos_core.data.video_io import read_rgb

WORKER_START_METHODS = ("auto", "fork", "forkserver", "spawn")


@dataclass
class ClipSamplingConfig:
    """How clips are drawn and augmented (gaps in the sequence's own frame units)."""

    num_frames: int = 5
    max_gap: int = 6
    crop_size: tuple[int, int] = (240, 240)  # (h, w)
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_objects: int = 10
    compose_probability: float = 0.5
    static_probability: float = 0.0
    cache_frames: bool = True
    cache_bytes: int = 512 * 2**20  # decoded-frame cache budget per worker process
    flip_probability: float = 0.5
    colour_jitter: bool = True

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.max_gap < 1:
            raise ValueError(f"num_frames and max_gap must be >= 1, got {self.num_frames}, "
                             f"{self.max_gap}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be (h, w) > 0, got {self.crop_size}")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        if not 1 <= self.max_objects < VOID_LABEL:
            raise ValueError(f"max_objects must be in 1..254, got {self.max_objects}")
        for name in ("compose_probability", "static_probability", "flip_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


class DecodedFrameCache:
    """Least-recently-used store of decoded arrays, bounded by their total bytes.

    Stored arrays are made read-only so no augmentation can corrupt them in place.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes_used = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[object, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: object, load: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        array = load()
        if array.nbytes <= self.max_bytes:
            array.flags.writeable = False
            self._entries[key] = array
            self.bytes_used += array.nbytes
            while self.bytes_used > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes_used -= evicted.nbytes
        return array


def sample_clip_positions(length: int, num_frames: int, max_gap: int,
                          rng: np.random.Generator) -> list[int]:
    """Non-decreasing positions in range(length) for a clip, each gap in 1..max_gap.

    Gaps are drawn in 1..max_gap, then random gaps are shortened until the clip fits.
    With fewer than `num_frames` positions, all are used in order and random ones repeat.
    """
    if length < 1:
        raise ValueError("cannot sample a clip from an empty sequence")
    if length < num_frames:
        extra = rng.integers(0, length, num_frames - length)
        return sorted(list(range(length)) + [int(p) for p in extra])
    gaps = rng.integers(1, max_gap + 1, num_frames - 1)
    while gaps.sum() > length - 1:
        shrinkable = np.flatnonzero(gaps > 1)
        gaps[rng.choice(shrinkable)] -= 1
    start = int(rng.integers(0, length - int(gaps.sum())))
    return [start] + [start + int(offset) for offset in np.cumsum(gaps)]


class VideoClipDataset(Dataset):
    """Random augmented clips from a list of sequences (see the module doc for the items).

    Item `index` uses sequence `index % len(sequences)`; the randomness comes from
    `np.random.default_rng((seed, index))` at epoch 0 and `((seed, index, epoch))` later,
    so an item is reproducible. Indices may be ints (epoch = `self.epoch`) or
    (epoch, index) tuples as yielded by `EpochSampler`, which keeps persistent workers in
    step with the epoch. A sequence is trained as labeled when it has >= 2 annotated frames
    (clips are drawn among those) or is a single annotated image (always a static clip).
    """

    def __init__(self, sequences: list[VideoSequence], config: ClipSamplingConfig | None = None,
                 samples_per_epoch: int | None = None, seed: int = 0) -> None:
        if not sequences:
            raise ValueError("VideoClipDataset needs at least one sequence")
        self.sequences = list(sequences)
        self.config = config or ClipSamplingConfig()
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.epoch = 0
        self._labeled = [self._is_labeled(s) for s in self.sequences]
        self._donors = [i for i, labeled in enumerate(self._labeled) if labeled]
        self._cache = DecodedFrameCache(self.config.cache_bytes) if self.config.cache_frames \
            else None

    @staticmethod
    def _is_labeled(sequence: VideoSequence) -> bool:
        return len(sequence.mask_paths) >= 2 or (len(sequence) == 1 and sequence.is_labeled)

    @property
    def cache(self) -> DecodedFrameCache | None:
        """Get the decoded-frame cache of this process (each worker holds its own copy)."""
        return self._cache

    def __len__(self) -> int:
        return self.samples_per_epoch if self.samples_per_epoch is not None \
            else len(self.sequences)

    def set_epoch(self, epoch: int) -> None:
        """Epoch for int indices in this process (workers: use `EpochSampler.set_epoch`)."""
        self.epoch = epoch

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # workers start with an empty cache
        if self._cache is not None:
            state["_cache"] = DecodedFrameCache(self._cache.max_bytes)
        return state

    def _cached(self, key: object, load: Callable[[], np.ndarray]) -> np.ndarray:
        return self._cache.get(key, load) if self._cache is not None else load()

    def _frame(self, sequence: VideoSequence, index: int) -> np.ndarray:
        path = sequence.frame_paths[index]
        return self._cached(("rgb", str(path)), lambda: read_rgb(path))  # (H, W, 3) uint8

    def _labels(self, sequence: VideoSequence, index: int) -> np.ndarray:
        path = sequence.mask_paths[index]
        return self._cached(("labels", str(path)), lambda: read_label_map(path))  # (H, W)

    def _frame_and_labels(self, sequence: VideoSequence, index: int
                          ) -> tuple[np.ndarray, np.ndarray]:
        frame, labels = self._frame(sequence, index), self._labels(sequence, index)
        if labels.shape != frame.shape[:2]:
            raise ValueError(f"{sequence.mask_paths[index]}: label map is {labels.shape}, but "
                             f"frame {sequence.frame_paths[index]} is {frame.shape[:2]}")
        return frame, labels

    def _labeled_clip(self, sequence: VideoSequence, rng: np.random.Generator
                      ) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
        cfg = self.config
        usable = sequence.labeled_indices
        if len(usable) == 1 or rng.random() < cfg.static_probability:
            index = usable[int(rng.integers(len(usable)))]
            frame, labels = self._frame_and_labels(sequence, index)
            frames, masks = static_image_clip(frame, labels, cfg.num_frames, rng)
            return frames, masks, [index] * cfg.num_frames
        for _ in range(3):  # prefer clips whose first frame shows an object
            positions = sample_clip_positions(len(usable), cfg.num_frames, cfg.max_gap, rng)
            if object_ids(self._labels(sequence, usable[positions[0]])).size:
                break
        indices = [usable[p] for p in positions]
        pairs = [self._frame_and_labels(sequence, i) for i in indices]
        return [frame for frame, _ in pairs], [labels for _, labels in pairs], indices

    def _unlabeled_clip(self, sequence: VideoSequence, rng: np.random.Generator
                        ) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
        cfg = self.config
        indices = sample_clip_positions(len(sequence), cfg.num_frames, cfg.max_gap, rng)
        frames = [self._frame(sequence, i) for i in indices]
        masks = [np.full(f.shape[:2], VOID_LABEL, dtype=np.uint8) for f in frames]
        if sequence.has_mask(indices[0]):
            masks[0] = self._frame_and_labels(sequence, indices[0])[1]
        return frames, masks, indices

    def _remap(self, masks: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Frame-0 objects to ids 1..K in random order, others to 0; (T, H, W) int64 and K."""
        reference_ids = object_ids(masks[0])
        if reference_ids.size > self.config.max_objects:
            reference_ids = rng.choice(reference_ids, self.config.max_objects, replace=False)
        order = rng.permutation(reference_ids.size)
        lookup = np.zeros(256, dtype=np.int64)
        lookup[VOID_LABEL] = VOID_LABEL
        lookup[reference_ids[order]] = np.arange(1, reference_ids.size + 1)
        return lookup[np.stack(masks)], int(reference_ids.size)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        rng = np.random.default_rng((self.seed, index) if epoch == 0
                                    else (self.seed, index, epoch))
        cfg = self.config
        sequence_index = index % len(self.sequences)
        sequence = self.sequences[sequence_index]
        has_labels = self._labeled[sequence_index]
        if has_labels:
            frames, masks, indices = self._labeled_clip(sequence, rng)
        else:
            frames, masks, indices = self._unlabeled_clip(sequence, rng)
        frames, masks = augment_clip(frames, masks, rng, cfg.crop_size, cfg.scale_range,
                                     cfg.flip_probability, jitter=False)
        if has_labels and rng.random() < cfg.compose_probability and self._donors:
            others = [d for d in self._donors if d != sequence_index] or self._donors
            donor = self.sequences[others[int(rng.integers(len(others)))]]
            donor_frames, donor_masks, _ = self._labeled_clip(donor, rng)
            frames, masks = compose_objects(frames, masks, donor_frames, donor_masks, rng)
        if cfg.colour_jitter:
            frames = colour_jitter(frames, rng)
        labels, num_objects = self._remap(masks, rng)
        pixels = torch.from_numpy(np.stack(frames))  # (T, H, W, 3) uint8
        return {
            "frames": pixels.permute(0, 3, 1, 2).float().div_(255.0),  # (T, 3, H, W)
            "labels": torch.from_numpy(labels),  # (T, H, W) int64
            "num_objects": num_objects,
            "name": sequence.name,
            "has_labels": has_labels,
            "frame_indices": torch.tensor(indices, dtype=torch.int64),  # (T,)
        }


class EpochSampler(Sampler):
    """Yields (epoch, index) so dataset copies in persistent workers know the epoch.

    Without `base`, indices are range(length), shuffled from (seed, epoch) when `shuffle`.
    With a `base` sampler (e.g. DistributedSampler) its indices are used and `set_epoch`
    is forwarded to it. Call `set_epoch(epoch)` before iterating the loader each epoch.
    """

    def __init__(self, length: int, shuffle: bool, seed: int = 0,
                 base: Sampler | None = None) -> None:
        self.length, self.shuffle, self.seed, self.base = length, shuffle, seed, base
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.base is not None and hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base) if self.base is not None else self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        if self.base is not None:
            indices = iter(self.base)
        elif self.shuffle:
            indices = iter(np.random.default_rng((self.seed, epoch)).permutation(self.length))
        else:
            indices = iter(range(self.length))
        for index in indices:
            yield epoch, int(index)


def worker_context(method: str) -> multiprocessing.context.BaseContext:
    """Start method of the loader workers; "auto" = forkserver when CUDA is available.

    A forked worker inherits the parent's CUDA context and threads, which CUDA does not
    support; a forkserver worker starts from a clean process (it imports the dataset's
    modules once, a few seconds, and receives the pickled dataset with an empty cache).
    """
    if method not in WORKER_START_METHODS:
        raise ValueError(f"worker start method: expected one of {WORKER_START_METHODS}, "
                         f"got {method!r}")
    if method == "auto":
        method = "forkserver" if torch.cuda.is_available() else "fork"
    return multiprocessing.get_context(method)


def make_loader(dataset: VideoClipDataset, batch_size: int, num_workers: int, shuffle: bool,
                distributed: bool = False, drop_last: bool = True, seed: int = 0,
                worker_start: str = "auto") -> DataLoader:
    """Build a loader over `dataset` with an `EpochSampler` (call `loader.sampler.set_epoch(e)`).

    Distributed: indices come from a DistributedSampler (this rank's share). Workers are
    persistent and start by `worker_context(worker_start)`; memory is pinned when CUDA is
    available. (No cv2.setNumThreads in the workers: in a forked child it deadlocks once the
    parent has used OpenCV's thread pool.)
    """
    base = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last) \
        if distributed else None
    sampler = EpochSampler(len(dataset), shuffle, seed, base)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        pin_memory=torch.cuda.is_available(), drop_last=drop_last,
        persistent_workers=num_workers > 0,
        multiprocessing_context=worker_context(worker_start) if num_workers > 0 else None)
