"""The inference engine: owns all per-video state (objects, memory, frame geometry).

Usage (`defvos_core.build.build_tracker` makes a ready tracker for either runtime)::

  tracker = build_tracker()                # shipped student, PyTorch on CPU
  tracker.add_objects(first_frame, seed)   # (H, W) label map: 0 background, k object k
  for frame in frames:
      result = tracker.step(frame)         # result.labels: (H, W) uint8 object ids
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from defvos_core.config import TrackerConfig
from defvos_core.errors import FrameError
from defvos_core.inference.backend import Backend
from defvos_core.inference.memory import MemoryFrame, MemoryManager
from defvos_core.inference.native_memory import release_free_memory
from defvos_core.inference.objects import (
    ObjectManager,
    background_from_objects,
    merge_banks,
    remap_slots,
)
from defvos_core.inference.preprocess import (
    FrameGeometry,
    check_aspect_ratio,
    frame_to_tensor,
    input_labels,
    label_sums,
    probabilities_to_input,
    seed_to_stride4,
)
from defvos_core.inference.prompts import PromptSeeder
from defvos_core.inference.presence import Presence, PresenceTracker
from defvos_core.inference.seeds import check_seed
from defvos_core.model.vos_model import FrameFeatures


@dataclass
class TrackResult:
    """A frame's segmentation at the input resolution."""

    labels: np.ndarray  # (H, W) uint8: 0 background, k = object k
    object_ids: list[int]  # tracked objects, ascending
    # Mean probability over each object's pixels (0 if absent), within the object's own
    # identity bank (its bank's background and objects), so that it does not depend on how
    # objects are spread over banks: objects of other banks do not lower it.
    confidence: dict[int, float]
    area: dict[int, int]  # pixels labelled with each object
    frame_index: int
    # (K, H, W) float32, only with step(return_probabilities=True): K x H x W x 4 bytes.
    probabilities: np.ndarray | None = field(default=None, repr=False)
    # Seed objects of this add_objects call smaller than the model's finest scale (one 4x4
    # cell of the processing size): kept at one cell each, but easily lost; warn about them.
    tiny_objects: list[int] = field(default_factory=list)
    # Each object's presence (`defvos_core.inference.presence`); absent objects are left out
    # of `labels` (area 0), so an occluded object is not drawn where it is not.
    presence: dict[int, Presence] = field(default_factory=dict)


class Tracker:
    """Semi-supervised video object segmentation of one stream, with bounded memory.

    Every state change is all or nothing: when `add_objects`, `step` or `remove_object`
    raises (bad input, or the backend failing, e.g. out of memory), the objects, memory
    and frame counter are as they were before the call.
    """

    def __init__(self, backend: Backend, config: TrackerConfig | None = None) -> None:
        self.backend = backend
        self.config = config or TrackerConfig()
        # Slots used per identity bank (config.slots_per_bank); the stored masks keep all
        # of the model's channels, the unused slots staying empty.
        self.slots_per_bank = self.config.bank_slots(backend.model_config.max_objects)
        self.objects = ObjectManager(self.slots_per_bank)
        self.memory = MemoryManager(self.config.mem_every, self.config.max_memory_frames,
                                    self.config.max_seed_frames)
        self.geometry: FrameGeometry | None = None
        self._last_geometry: FrameGeometry | None = None  # kept across reset()
        self.frame_index = -1
        self.presence = PresenceTracker(self.config.presence)
        self.prompts = PromptSeeder(backend, self.config)  # boxes / clicks -> seed masks

    # ----------------------------------------------------------------------- state changes
    @property
    def object_ids(self) -> list[int]:
        return self.objects.object_ids

    def reset(self) -> None:
        """Forget every object and the whole memory."""
        self.objects.clear()
        self.memory.clear()
        self.presence.clear()
        self.geometry = None
        self.frame_index = -1

    def remove_object(self, object_id: int) -> None:
        """Stop tracking `object_id` (KeyError if it is not tracked).

        Objects of a now surplus identity bank move to free slots of the others (the stored
        masks follow and are re-encoded), so every frame pays for ceil(objects / slots)
        banks, not for the most objects ever tracked.
        """
        if object_id not in self.objects:
            raise KeyError(f"object {object_id} is not tracked (tracked: {self.object_ids})")
        with self._all_or_nothing():
            layout = self._bank_layout()
            erased = self.objects.remove(object_id)
            moved = self.objects.compact()
            self.memory.forget_object(object_id)
            if not len(self.objects):
                self.memory.clear()
                return
            banks = self.objects.num_banks
            self.memory.edit_masks(lambda mask: remap_slots(mask, [erased], moved, banks),
                                   self.backend.encode_identity)
            self._restart_presence_of_regrouped(layout)

    def add_objects(self, frame: np.ndarray, label_map: np.ndarray | None = None,
                    boxes: dict[int, tuple] | None = None,
                    points: dict[int, list[tuple]] | None = None) -> TrackResult:
        """Add or replace the objects of `label_map` at this frame; others keep being tracked.

        frame: (H, W, 3) uint8 RGB; label_map: (H, W) integers, 0 background, k object k,
        255 void (background; see `defvos_core.inference.seeds`), or None.
        boxes {id: (x0, y0, x1, y1)} / points {id: [(x, y[, label]), ...]}: objects seeded by
        a box or clicks (label 1 on the object, 0 off it), in frame pixels, made into masks
        by `self.prompts` (`defvos_core.inference.prompts`); ids distinct from the map's.
        Returns this frame's segmentation (the seed objects plus the tracked ones); objects
        too small for the model's finest scale are kept and listed in `tiny_objects`.
        Raises SeedError / FrameError (with their `kind`) on bad input.
        """
        features = None  # the seed frame's, when the prompt seeder encoded it
        if boxes or points or label_map is None:
            self._check_frame(frame)
            label_map, features = self.prompts.seed(frame, label_map, boxes, points)
        with self._all_or_nothing():
            return self._add_objects(frame, label_map, features)

    def _add_objects(self, frame: np.ndarray, label_map: np.ndarray,
                     features: FrameFeatures | None) -> TrackResult:
        self._check_frame(frame)
        seed, seed_ids = check_seed(label_map, frame.shape)
        image = self._prepare(frame)
        if features is None:
            features = self.backend.encode(image)
        previous_ids = self.object_ids
        kept_ids = [i for i in previous_ids if i not in seed_ids]
        predicted = self._predict(features)[0] if kept_ids and not self.memory.empty else None

        replaced = [self.objects.slot_of(i) for i in seed_ids if i in self.objects]
        for object_id in seed_ids:
            if object_id in self.objects:
                self.memory.forget_object(object_id)
        banks_before, layout = self.objects.num_banks, self._bank_layout()
        for object_id in seed_ids:
            self.objects.add(object_id)
        self._restart_presence_of_regrouped(layout)
        if not self.memory.empty and (replaced or self.objects.num_banks > banks_before):
            banks = self.objects.num_banks
            self.memory.edit_masks(lambda mask: remap_slots(mask, replaced, [], banks),
                                   self.backend.encode_identity)

        seed_masks, tiny = seed_to_stride4(seed, seed_ids, self.geometry)  # (N, h4, w4)
        seed_masks = seed_masks.to(self.backend.device)
        ids = self.object_ids
        covered = seed_masks.sum(0)  # seed pixels take the seed objects' labels
        probabilities = torch.zeros(len(ids) + 1, *covered.shape, device=self.backend.device)
        for row, object_id in enumerate(ids, start=1):
            if object_id in seed_ids:
                probabilities[row] = seed_masks[seed_ids.index(object_id)]
            elif predicted is not None:
                probabilities[row] = predicted[1 + previous_ids.index(object_id)] * (1 - covered)
        probabilities[0] = background_from_objects(probabilities[1:], dim=0)
        entry = self._memory_frame(features, probabilities)
        entry.object_ids = set(seed_ids)
        self.memory.add_seed(entry)
        result = self._result(probabilities)
        seed_pixels = seed > 0
        # Seed objects are exactly their seed masks at the input resolution.
        result.labels[~seed_pixels & np.isin(result.labels, seed_ids)] = 0
        result.labels[seed_pixels] = seed[seed_pixels]
        result.area = {i: int((result.labels == i).sum()) for i in result.object_ids}
        result.tiny_objects = tiny
        result.presence = self.presence.seeded(seed_ids, result.object_ids)
        return result

    # ----------------------------------------------------------------------------- tracking
    def step(self, frame: np.ndarray, return_probabilities: bool = False) -> TrackResult:
        """Segment the next frame of the stream (an (H, W, 3) uint8 RGB array).

        return_probabilities: also return every object's probability at the input size
        (K x H x W float32: opt-in, as it grows with objects times pixels).
        """
        with self._all_or_nothing():
            return self._step(frame, return_probabilities)

    def _step(self, frame: np.ndarray, return_probabilities: bool) -> TrackResult:
        if not len(self.objects):
            self._check_frame(frame)
            self.frame_index += 1
            return TrackResult(np.zeros(frame.shape[:2], np.uint8), [], {}, {}, self.frame_index)
        image = self._prepare(frame)
        features = self.backend.encode(image)
        probabilities, own_bank = self._predict(features)  # (K+1, h4, w4), (K, h4, w4)
        self.memory.add_tracked(self._memory_frame(features, probabilities))
        result = self._result(probabilities, return_probabilities, own_bank)
        result.presence = self.presence.update(result.area, result.confidence,
                                               result.labels.size)
        absent = [i for i, state in result.presence.items() if not state.present]
        if absent:
            result.labels[np.isin(result.labels, absent)] = 0
            result.area.update({object_id: 0 for object_id in absent})
        return result

    def memory_bytes(self) -> int:
        """Bytes held by the temporal memory."""
        return self.memory.nbytes()

    def memory_frames(self) -> int:
        """Frames held by the temporal memory: the long-term ones and the short-term one."""
        return self.memory.num_long_term_frames() + (0 if self.memory.empty else 1)

    # ------------------------------------------------------------------------------ helpers
    def _bank_layout(self) -> dict[int, tuple[int, frozenset[int]]]:
        """Each object's bank and the objects sharing it (what its confidence is against)."""
        banks: dict[int, set[int]] = {}
        for object_id in self.object_ids:
            banks.setdefault(self.objects.slot_of(object_id)[0], set()).add(object_id)
        return {object_id: (bank, frozenset(members))
                for bank, members in banks.items() for object_id in members}

    def _restart_presence_of_regrouped(self, before: dict[int, tuple[int, frozenset[int]]]
                                       ) -> None:
        """Restart the presence reference of objects that changed bank or bank-mates.

        Their confidence is now taken against other objects: a new scale
        (`PresenceTracker.restart`).
        """
        after = self._bank_layout()
        self.presence.restart([i for i in before if i in after and after[i] != before[i]])

    @contextmanager
    def _all_or_nothing(self) -> Iterator[None]:
        """Undo every state change of the block if it raises."""
        objects, memory = self.objects.snapshot(), self.memory.snapshot()
        presence = self.presence.snapshot()
        geometry, frame_index = self.geometry, self.frame_index
        try:
            yield
        except BaseException:
            self.objects.restore(objects)
            self.memory.restore(memory)
            self.presence.restore(presence)
            self.geometry, self.frame_index = geometry, frame_index
            raise

    def _check_frame(self, frame: np.ndarray) -> None:
        """Raise FrameError for a frame that is not (H, W, 3) uint8, too elongated, or resized."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise FrameError("frame_format", f"expected an (H, W, 3) uint8 RGB frame, got "
                             f"shape {frame.shape} dtype {frame.dtype}")
        check_aspect_ratio(frame.shape[0], frame.shape[1], self.config.max_aspect_ratio)
        size = frame.shape[:2]
        if self.geometry is not None and size != self.geometry.input_size and len(self.objects):
            raise FrameError("frame_size", f"frame size changed from {self.geometry.input_size} "
                             f"to {size}; reset the tracker first")

    def _prepare(self, frame: np.ndarray) -> torch.Tensor:
        self._check_frame(frame)
        if self.geometry is None or self.geometry.input_size != frame.shape[:2]:
            previous = self.geometry or self._last_geometry
            self.geometry = FrameGeometry.for_input(frame.shape[0], frame.shape[1],
                                                    self.config.size, self.config.max_long_side)
            if previous is not None and previous != self.geometry:
                release_free_memory()  # the last size's buffers (native_memory)
            self._last_geometry = self.geometry
        self.frame_index += 1
        return frame_to_tensor(frame, self.geometry, self.backend.device, self.backend.dtype)

    def _predict(self, features: FrameFeatures) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predict merged probabilities (K+1, h4, w4) over [background, objects in id order].

        Also returns, with several banks, each object's probability within its own bank
        (K, h4, w4; a softmax over that bank's background and objects); None with one bank,
        where it equals the merged one.
        """
        logits = self.backend.segment(features, self.memory.tensors()).float()
        log_probs = torch.log_softmax(logits, dim=1)  # (banks, S+1, h4, w4)
        merged = merge_banks(log_probs, [self.objects.slot_of(i) for i in self.object_ids])
        return merged, (self._own_bank(log_probs) if self.objects.num_banks > 1 else None)

    def _own_bank(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Each object's probability against its own bank's background and objects only."""
        own = log_probs.new_empty(len(self.object_ids), *log_probs.shape[-2:])
        by_bank: dict[int, list[tuple[int, int]]] = {}
        for row, object_id in enumerate(self.object_ids):
            bank, slot = self.objects.slot_of(object_id)
            by_bank.setdefault(bank, []).append((row, slot))
        for bank, members in by_bank.items():  # each bank merged on its own
            probabilities = merge_banks(log_probs[bank:bank + 1], [(0, s) for _, s in members])
            for (row, _), probability in zip(members, probabilities[1:]):
                own[row] = probability
        return own

    def _memory_frame(self, features: FrameFeatures, probabilities: torch.Tensor) -> MemoryFrame:
        """Memory entries of the current frame from its merged probabilities (K+1, h4, w4)."""
        banks = self.objects.num_banks
        mask = probabilities.new_zeros(banks, self.backend.model_config.num_slots,
                                       *probabilities.shape[-2:])
        for row, object_id in enumerate(self.object_ids, start=1):
            bank, slot = self.objects.slot_of(object_id)
            mask[bank, slot] = probabilities[row]
        mask[:, 0] = background_from_objects(mask[:, 1:], dim=1)
        mask = mask.to(self.backend.dtype)
        return MemoryFrame(features.key, features.value, mask, self.backend.encode_identity(mask))

    def _result(self, probabilities: torch.Tensor, return_probabilities: bool = False,
                own_bank: torch.Tensor | None = None) -> TrackResult:
        """Return the TrackResult of merged probabilities (K+1, h4, w4), at the input size.

        own_bank: each object's probability within its bank (K, h4, w4), for `confidence`
        (None: the merged probabilities are the same).

        The channels are upsampled a few at a time (`input_labels`), so memory grows with
        the input size, not with objects times it.
        """
        best, best_value = input_labels(probabilities, self.geometry)  # (H, W) each
        ids = self.object_ids
        lookup = torch.tensor([0] + ids, device=best.device, dtype=torch.uint8)
        labels = lookup[best]
        flat = best.flatten()
        counts = torch.bincount(flat, minlength=len(ids) + 1).tolist()
        if own_bank is None:
            sums = torch.bincount(flat, weights=best_value.flatten().double(),
                                  minlength=len(ids) + 1).tolist()
        else:
            sums = [0.0] + label_sums(own_bank, best, self.geometry)
        area = {object_id: counts[row] for row, object_id in enumerate(ids, start=1)}
        confidence = {object_id: sums[row] / counts[row] if counts[row] else 0.0
                      for row, object_id in enumerate(ids, start=1)}
        probs = None
        if return_probabilities:
            probs = probabilities_to_input(probabilities[1:], self.geometry)
            probs = probs.cpu().numpy().astype(np.float32)
        return TrackResult(labels.cpu().numpy(), ids, confidence, area, self.frame_index, probs)
