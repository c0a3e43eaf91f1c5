"""The tracker's temporal memory: seed frames, a bounded long-term FIFO and the short-term frame.

`MemoryManager` decides what is remembered and forgotten; it never runs the model itself
except through the `encode_identity` callable it is given when stored masks change.
Everything it holds is bounded: at most `max_seed_frames + max_memory_frames` long-term
frames plus one short-term frame, so cost and memory stay flat for hours.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from defvos_core.model.propagation import MemoryTensors

IdentityEncoder = Callable[[torch.Tensor], torch.Tensor]  # (Bi, S+1, h4, w4) -> (Bi, L, C, h, w)


@dataclass(eq=False)
class MemoryFrame:
    """Memory entries of one frame."""

    key: torch.Tensor  # (1, L, C, h, w)
    value: torch.Tensor  # (1, L, C, h, w)
    mask: torch.Tensor  # (banks, S+1, h4, w4) soft mask the identity entries come from
    identity: torch.Tensor  # (banks, L, C, h, w)
    object_ids: set[int] = field(default_factory=set)  # objects a seed frame introduced

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size()
                   for t in (self.key, self.value, self.mask, self.identity))


@dataclass(eq=False)
class MemoryState:
    """A `MemoryManager.snapshot`: the frames held and each one's mutable entries."""

    seeds: list[MemoryFrame]
    fifo: list[MemoryFrame]
    short: MemoryFrame | None
    frames_since_memory: int
    stored: list[tuple[MemoryFrame, torch.Tensor, torch.Tensor, set[int]]]


class MemoryManager:
    """Seed frames + a FIFO of every `mem_every`-th frame (long-term) + the last frame."""

    def __init__(self, mem_every: int, max_memory_frames: int, max_seed_frames: int) -> None:
        if mem_every < 1 or max_memory_frames < 0 or max_seed_frames < 1:
            raise ValueError("mem_every >= 1, max_memory_frames >= 0, max_seed_frames >= 1")
        self.mem_every = mem_every
        self.seeds: deque[MemoryFrame] = deque(maxlen=max_seed_frames)
        self.fifo: deque[MemoryFrame] = deque(maxlen=max_memory_frames)
        self.short: MemoryFrame | None = None
        self._frames_since_memory = 0
        self._long_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def empty(self) -> bool:
        return self.short is None

    def clear(self) -> None:
        self.seeds.clear()
        self.fifo.clear()
        self.short = None
        self._frames_since_memory = 0
        self._long_cache = None

    def frames(self) -> list[MemoryFrame]:
        """Long-term frames, seeds first."""
        return list(self.seeds) + list(self.fifo)

    def add_seed(self, frame: MemoryFrame) -> None:
        """Keep a seed frame (dropping the oldest beyond the bound); it is also the last frame."""
        self.seeds.append(frame)
        self.short = frame
        self._frames_since_memory = 0
        self._long_cache = None

    def add_tracked(self, frame: MemoryFrame) -> None:
        """Make a tracked frame the short-term memory (every `mem_every`-th also long-term)."""
        self.short = frame
        self._frames_since_memory += 1
        if self._frames_since_memory >= self.mem_every:
            self._frames_since_memory = 0
            if self.fifo.maxlen:
                self.fifo.append(frame)
                self._long_cache = None

    def tensors(self) -> MemoryTensors:
        """Stacked long-term entries and the short-term frame, as the model takes them."""
        if self.short is None:
            raise RuntimeError("memory is empty: add a seed first")
        if self._long_cache is None:
            frames = self.frames()
            self._long_cache = (torch.stack([f.key for f in frames], dim=1),
                                torch.stack([f.value for f in frames], dim=1),
                                torch.stack([f.identity for f in frames], dim=1))
        key, value, identity = self._long_cache
        short = self.short
        return MemoryTensors(key, value, identity, short.key.unsqueeze(1),
                             short.value.unsqueeze(1), short.identity.unsqueeze(1))

    def edit_masks(self, edit: Callable[[torch.Tensor], torch.Tensor],
                   encode_identity: IdentityEncoder) -> None:
        """Apply `edit` to every stored mask and recompute the identity entries.

        Used when an object is removed or replaced (its slot moves to background), when a
        new identity bank opens (every stored frame gains an all-background bank) and when
        banks are compacted (objects change slots, the last banks go). `edit` returns a new
        tensor: stored ones are never written to (`snapshot` relies on it).
        """
        stored = self._stored_frames()
        for frame in stored.values():
            frame.mask = edit(frame.mask)
            frame.identity = encode_identity(frame.mask)
        self._long_cache = None

    def forget_object(self, object_id: int) -> None:
        """Drop `object_id` from the seeds' bookkeeping; seeds left with no object are dropped."""
        for frame in self.seeds:
            frame.object_ids.discard(object_id)
        kept = [f for f in self.seeds if f.object_ids]
        if len(kept) != len(self.seeds):
            self.seeds = deque(kept, maxlen=self.seeds.maxlen)
            self._long_cache = None

    def _stored_frames(self) -> dict[int, MemoryFrame]:
        """Every held frame once (the short-term frame may also be a long-term one)."""
        return {id(f): f for f in self.frames() + ([self.short] if self.short else [])}

    def snapshot(self) -> MemoryState:
        """Return the whole state, for `restore` (stored tensors are replaced, never written)."""
        stored = [(f, f.mask, f.identity, set(f.object_ids))
                  for f in self._stored_frames().values()]
        return MemoryState(list(self.seeds), list(self.fifo), self.short,
                           self._frames_since_memory, stored)

    def restore(self, state: MemoryState) -> None:
        """Return to a `snapshot`."""
        for frame, mask, identity, object_ids in state.stored:
            frame.mask, frame.identity, frame.object_ids = mask, identity, set(object_ids)
        self.seeds = deque(state.seeds, maxlen=self.seeds.maxlen)
        self.fifo = deque(state.fifo, maxlen=self.fifo.maxlen)
        self.short = state.short
        self._frames_since_memory = state.frames_since_memory
        self._long_cache = None

    def num_long_term_frames(self) -> int:
        return len(self.seeds) + len(self.fifo)

    def nbytes(self) -> int:
        """Bytes held by the memory.

        Stored frames (shared ones once) plus the stacked long-term tensors the model reads,
        counted whether or not they are built right now.
        """
        stored = self._stored_frames()
        total = sum(f.nbytes() for f in stored.values())
        total += sum(t.numel() * t.element_size()
                     for f in self.frames() for t in (f.key, f.value, f.identity))
        return total
