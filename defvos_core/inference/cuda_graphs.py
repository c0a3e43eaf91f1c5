"""CUDA graphs for the torch backend's per-frame model calls (encode, identity, segment).

At batch 1 the GPU is bound by kernel launches, not compute. Once the tracker's memory is
full every tensor shape of a frame's work is fixed, so each model call can be captured once
in a CUDA graph and replayed per frame: one launch instead of hundreds.

- `StaticCall`: one call's static input buffers, its captured graph and static outputs.
  Inputs are copied into the buffers before each replay (an input marked reusable that is
  the very tensor copied last time is not copied again: the stacked long-term memory changes
  only every `mem_every` frames); outputs are cloned after it, since the next replay
  overwrites them.
- `GraphCache`: static calls of one function keyed by input shapes and dtypes (padded size,
  identity banks, memory frames). A key is captured once it has come `capture_after` times
  in a row, so nothing is captured while the memory fills up (its frame count changes every
  `mem_every` frames); until then, calls run eagerly. Beyond `max_entries` keys the least
  recently used one is dropped with its graph. A capture that fails (an operation CUDA
  graphs cannot hold) is logged once and the function runs eagerly from then on.
- `GraphedModel`: a `VOSModel`'s three per-frame calls through three caches.

With `capture=False` the same buffers serve an eager call in place of the replay, so all of
this except the capture itself runs (and is tested) on a CPU.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable, Sequence

import torch

from defvos_core.model.propagation import MemoryTensors
from defvos_core.model.vos_model import FrameFeatures, VOSModel

LOGGER = logging.getLogger("defvos")
Tensors = tuple[torch.Tensor, ...]
ShapeKey = tuple[tuple[tuple[int, ...], torch.dtype], ...]
CAPTURE_AFTER = 6  # > the default mem_every (5): no capture while the memory fills up
MAX_ENTRIES = 3  # graphs kept per function (each holds its own memory pool)


def shape_key(tensors: Sequence[torch.Tensor]) -> ShapeKey:
    """Return what a graph is specialised on: every input's shape and dtype."""
    return tuple((tuple(tensor.shape), tensor.dtype) for tensor in tensors)


class StaticCall:
    """One function over fixed-shape inputs: static buffers + a CUDA graph (or eager calls)."""

    def __init__(self, fn: Callable[..., Tensors], example: Sequence[torch.Tensor],
                 capture: bool) -> None:
        self.fn = fn
        self.inputs = [torch.empty_like(tensor) for tensor in example]
        self.sources: list[torch.Tensor | None] = [None] * len(example)
        self.copies = 0  # input copies made (tests check the reuse of unchanged inputs)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: Tensors = ()
        for buffer, tensor in zip(self.inputs, example):
            buffer.copy_(tensor)  # real values: the warm-up must not read garbage
        if capture:
            self._capture()

    def _capture(self) -> None:
        # Warm up on a side stream first, as torch.cuda.graph's documentation asks.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (a ROS node's) do not break this capture
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = tuple(self.fn(*self.inputs))

    def __call__(self, tensors: Sequence[torch.Tensor], reuse: frozenset[int]) -> Tensors:
        """Copy `tensors` into the buffers, run, and return fresh output tensors."""
        for index, (buffer, tensor) in enumerate(zip(self.inputs, tensors)):
            if index in reuse and self.sources[index] is tensor:
                continue
            buffer.copy_(tensor)
            self.copies += 1
            self.sources[index] = tensor if index in reuse else None
        if self.graph is None:
            return tuple(output.clone() for output in self.fn(*self.inputs))
        self.graph.replay()
        return tuple(output.clone() for output in self.outputs)


class GraphCache:
    """Static calls of `fn` per input shape key; eager until a key has repeated."""

    def __init__(self, fn: Callable[..., Tensors], capture: bool,
                 capture_after: int = CAPTURE_AFTER, max_entries: int = MAX_ENTRIES,
                 reuse: Sequence[int] = ()) -> None:
        if capture_after < 1 or max_entries < 1:
            raise ValueError(f"capture_after ({capture_after}) and max_entries "
                             f"({max_entries}) must be >= 1")
        self.fn = fn
        self.capture = capture
        self.capture_after = capture_after
        self.max_entries = max_entries
        self.reuse = frozenset(reuse)  # input positions whose identity means "unchanged"
        self.entries: OrderedDict[ShapeKey, StaticCall] = OrderedDict()
        self.captures = 0
        self.failed: str | None = None  # why a capture failed (then always eager)
        self.eager_calls = 0
        self.static_calls = 0
        self._last_key: ShapeKey | None = None
        self._streak = 0

    def __call__(self, *tensors: torch.Tensor) -> Tensors:
        key = shape_key(tensors)
        self._streak = self._streak + 1 if key == self._last_key else 1
        self._last_key = key
        entry = self.entries.get(key)
        if entry is None and self._streak >= self.capture_after and not self.failed:
            entry = self._new_entry(key, tensors)
        if entry is None:
            self.eager_calls += 1
            return tuple(self.fn(*tensors))
        self.entries.move_to_end(key)
        self.static_calls += 1
        return entry(tensors, self.reuse)

    def _new_entry(self, key: ShapeKey, tensors: Sequence[torch.Tensor]) -> StaticCall | None:
        try:
            entry = StaticCall(self.fn, tensors, self.capture)
        except RuntimeError as error:  # e.g. an operation not permitted while capturing
            self.failed = str(error).splitlines()[0]
            LOGGER.warning("CUDA graph capture of %s failed, running it eagerly: %s",
                           getattr(self.fn, "__name__", "a call"), self.failed)
            return None
        self.entries[key] = entry
        self.captures += 1
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return entry

    def clear(self) -> None:
        """Drop every static call and graph."""
        self.entries.clear()
        self._last_key, self._streak = None, 0


class GraphedModel:
    """`encode`, `encode_identity` and `segment` of a model through shape-keyed graph caches."""

    def __init__(self, model: VOSModel, capture: bool, capture_after: int = CAPTURE_AFTER,
                 max_entries: int = MAX_ENTRIES) -> None:
        options = dict(capture=capture, capture_after=capture_after, max_entries=max_entries)

        def encode(image: torch.Tensor) -> Tensors:
            return tuple(model.encode(image))

        def identity(mask: torch.Tensor) -> Tensors:
            return (model.encode_identity(mask),)

        def segment(skip4: torch.Tensor, skip8: torch.Tensor, tokens: torch.Tensor,
                    *memory: torch.Tensor) -> Tensors:
            # segment reads no key/value of the current frame: None keeps them out of the graph
            features = FrameFeatures(skip4, skip8, tokens, None, None)  # type: ignore[arg-type]
            return (model.segment(features, MemoryTensors(*memory)).logits,)

        self.encode_cache = GraphCache(encode, **options)
        self.identity_cache = GraphCache(identity, **options)
        # inputs 3, 4, 5: the stacked long-term key/value/identity, rebuilt only when it changes
        self.segment_cache = GraphCache(segment, reuse=(3, 4, 5), **options)

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """Normalised padded image (1, 3, H, W) -> features and visual memory entries."""
        return FrameFeatures(*self.encode_cache(image))

    def encode_identity(self, mask: torch.Tensor) -> torch.Tensor:
        """Soft masks (banks, S+1, H/4, W/4) -> identity entries (banks, L, C, H/16, W/16)."""
        return self.identity_cache(mask)[0]

    def segment(self, features: FrameFeatures, memory: MemoryTensors) -> torch.Tensor:
        """Features + memory -> logits (banks, S+1, H/4, W/4)."""
        return self.segment_cache(features.skip4, features.skip8, features.tokens, *memory)[0]

    def caches(self) -> dict[str, GraphCache]:
        """Return the three caches by call name."""
        return {"encode": self.encode_cache, "identity": self.identity_cache,
                "segment": self.segment_cache}

    def summary(self) -> str:
        """Return one line: per call, graphs captured and calls served by them / eagerly."""
        parts = [f"{name} {cache.captures} captured, {cache.static_calls} static / "
                 f"{cache.eager_calls} eager" + (f" (capture failed: {cache.failed})"
                                                 if cache.failed else "")
                 for name, cache in self.caches().items()]
        return "; ".join(parts)

    def clear(self) -> None:
        """Drop every captured graph."""
        for cache in self.caches().values():
            cache.clear()
