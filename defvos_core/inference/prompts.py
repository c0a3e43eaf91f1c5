"""Box and click seeds -> a seed label map, by the model's prompt head or by GrabCut.

    seeder = PromptSeeder(backend, TrackerConfig())
    labels = seeder.label_map(rgb, None, SeedPrompts(boxes={1: (x0, y0, x1, y1)},
                                                     points={2: [(x, y, 1), (x, y, 0)]}))

Coordinates are pixels of the camera frame: boxes (x0, y0, x1, y1) with x1, y1 the right and
bottom edges (a detector's xyxy), clicks (x, y[, label]) with label 1 on the object (the
default) and 0 off it. A box partly outside the frame is clipped to it; a click outside the
frame is an error. `TrackerConfig.prompts` chooses the method per kind (`PROMPT_METHODS`).
Objects of one call compete: each pixel goes to the most likely object above 0.5, and
mask-seeded pixels keep their mask's id.

Runtimes: the head is a torch module; the torch backend runs the copy inside its model
(its device and dtype), the onnxruntime backend loads the head from the same weights file
and runs it with torch on the CPU on the features of its encoder graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from defvos_core.config import MAX_OBJECT_ID, TrackerConfig
from defvos_core.errors import SeedError
from defvos_core.inference.backend import Backend
from defvos_core.inference.grabcut import grabcut_box, grabcut_clicks
from defvos_core.inference.memory import MemoryFrame, MemoryManager
from defvos_core.inference.objects import background_from_objects, merge_banks
from defvos_core.inference.preprocess import (
    FrameGeometry,
    frame_to_tensor,
    probabilities_to_input,
)
from defvos_core.inference.seeds import clean_seed
from defvos_core.model.prompt_head import ObjectPrompt, PromptHead, prompt_maps
from defvos_core.model.vos_model import FrameFeatures, mask_to_stride4

Box = tuple[float, float, float, float]
Click = tuple[float, float, int]


@dataclass
class SeedPrompts:
    """Box and click prompts of one seed frame, by object id (camera pixels)."""

    boxes: dict[int, Box] = field(default_factory=dict)
    points: dict[int, list[Click]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.boxes or self.points)

    @property
    def object_ids(self) -> list[int]:
        return sorted([*self.boxes, *self.points])


def _object_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 1 <= int(value) <= MAX_OBJECT_ID:
        raise SeedError("seed_ids", f"object id {value!r}: expected an integer in "
                        f"1..{MAX_OBJECT_ID}")
    return int(value)


def _numbers(values: Any, count: tuple[int, ...], kind: str, what: str) -> list[float]:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in count or not all(math.isfinite(v) for v in numbers):
        raise SeedError(kind, f"{what}: expected {' or '.join(map(str, count))} finite "
                        f"numbers, got {values!r}")
    return numbers


def check_box(box: Any, frame_shape: Sequence[int], object_id: int) -> Box:
    """Return the box clipped to the frame; SeedError `prompt_box` if degenerate or outside."""
    height, width = frame_shape[:2]
    what = f"box of object {object_id}"
    x0, y0, x1, y1 = _numbers(box, (4,), "prompt_box", f"{what} (x0, y0, x1, y1)")
    if x1 <= x0 or y1 <= y0:
        raise SeedError("prompt_box", f"{what} {box!r} is empty: expected x0 < x1 and y0 < y1 "
                        "(corners left-top, right-bottom)")
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        raise SeedError("prompt_box", f"{what} {box!r} is outside the {width}x{height} frame "
                        "(or under a pixel inside it)")
    return clipped


def check_points(points: Any, frame_shape: Sequence[int], object_id: int) -> list[Click]:
    """Return (x, y, label) clicks; SeedError `prompt_points` if none positive or outside."""
    height, width = frame_shape[:2]
    what = f"points of object {object_id}"
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or not points:
        raise SeedError("prompt_points", f"{what}: expected a non-empty list of (x, y[, label])")
    clicks = []
    for point in points:
        numbers = _numbers(point, (2, 3), "prompt_points", f"{what}: point {point!r}")
        x, y = numbers[:2]
        label = numbers[2] if len(numbers) == 3 else 1.0
        if label not in (0.0, 1.0):
            raise SeedError("prompt_points", f"{what}: label of {point!r} must be 1 (on the "
                            "object) or 0 (off it)")
        if not (0 <= x < width and 0 <= y < height):
            raise SeedError("prompt_points", f"{what}: {point!r} is outside the "
                            f"{width}x{height} frame")
        clicks.append((x, y, int(label)))
    if not any(label for _, _, label in clicks):
        raise SeedError("prompt_points", f"{what}: no positive point (label 1) among {points!r}")
    return clicks


def check_prompts(boxes: Mapping[Any, Any] | None, points: Mapping[Any, Any] | None,
                  frame_shape: Sequence[int], mask_ids: Sequence[int] = ()) -> SeedPrompts:
    """Validate prompts for a frame of `frame_shape`.

    Ids must differ from each other and from `mask_ids` (SeedError `seed_ids`).
    """
    prompts = SeedPrompts()
    seen = {int(i): "mask" for i in mask_ids}
    for kind, given in (("box", boxes or {}), ("points", points or {})):
        for key, value in given.items():
            object_id = _object_id(key)
            if object_id in seen:
                raise SeedError("seed_ids", f"object {object_id} is given twice (as a "
                                f"{seen[object_id]} and as {kind}); one seed per object")
            seen[object_id] = kind
            if kind == "box":
                prompts.boxes[object_id] = check_box(value, frame_shape, object_id)
            else:
                prompts.points[object_id] = check_points(value, frame_shape, object_id)
    return prompts


class PromptSeeder:
    """Turns `SeedPrompts` on a frame into a seed label map, with a backend's model."""

    def __init__(self, backend: Backend, config: TrackerConfig | None = None) -> None:
        self.backend = backend
        self.config = config or TrackerConfig()

    # --------------------------------------------------------------------------- public
    def method_of(self, object_id: int, prompts: SeedPrompts) -> str:
        """Return the configured method for this object's prompt kind."""
        options = self.config.prompts
        return options.box_method if object_id in prompts.boxes else options.points_method

    def check_ready(self, prompts: SeedPrompts) -> None:
        """Raise ValueError when a configured method needs a head these weights lack."""
        needs_head = any(self.method_of(i, prompts).startswith("head")
                         for i in prompts.object_ids)
        if needs_head and self.head() is None:
            raise ValueError("these weights have no prompt head (model_config.prompt_head); "
                             "use weights with one or prompts.box_method / points_method "
                             "'grabcut'")

    def seed(self, frame: np.ndarray, label_map: np.ndarray | None,
             boxes: Mapping[Any, Any] | None, points: Mapping[Any, Any] | None
             ) -> tuple[np.ndarray, FrameFeatures | None]:
        """Check a seed given as a label map and/or prompts; return one (H, W) label map.

        What `Tracker.add_objects` calls: ids must be distinct across the three (SeedError
        `seed_ids`), boxes / points valid (`prompt_box` / `prompt_points`). Also returns
        the frame's encoder features when a method needed them (else None), for the
        tracker to store the seed frame without encoding it again.
        """
        if label_map is None and not boxes and not points:
            raise SeedError("seed_empty", "no seed: give a label map, boxes or points")
        mask_ids = [] if label_map is None else \
            [int(i) for i in np.unique(clean_seed(label_map)) if i]
        prompts = check_prompts(boxes, points, frame.shape, mask_ids)
        return self._seed_and_features(frame, label_map, prompts)

    def label_map(self, frame: np.ndarray, label_map: np.ndarray | None,
                  prompts: SeedPrompts) -> np.ndarray:
        """Return the (H, W) int64 seed of `frame` ((H, W, 3) uint8 RGB).

        It holds `label_map`'s objects (None: none) plus one object per prompt; prompts must
        come from `check_prompts`.
        """
        return self._seed_and_features(frame, label_map, prompts)[0]

    def _seed_and_features(self, frame: np.ndarray, label_map: np.ndarray | None,
                           prompts: SeedPrompts) -> tuple[np.ndarray, FrameFeatures | None]:
        """Return `label_map`'s seed and the frame's features if a method encoded it."""
        shape = frame.shape[:2]
        seed = np.zeros(shape, np.int64) if label_map is None else clean_seed(label_map)
        if seed.shape != shape:
            raise SeedError("seed_size", f"seed mask is {seed.shape[1]}x{seed.shape[0]} but its "
                            f"frame is {shape[1]}x{shape[0]}")
        self.check_ready(prompts)
        ids = prompts.object_ids
        if not ids:
            return seed, None
        geometry = FrameGeometry.for_input(shape[0], shape[1], self.config.size,
                                           self.config.max_long_side)
        features = None
        methods = {i: self.method_of(i, prompts) for i in ids}
        soft: dict[int, torch.Tensor] = {}  # object id -> (H, W) probability at the input size
        head_ids = [i for i in ids if methods[i].startswith("head")]
        if head_ids:
            features = self._encode(frame, geometry)
            soft.update(zip(head_ids, self._run_head(features, geometry, prompts, head_ids)))
        for object_id in ids:
            if object_id not in soft:
                soft[object_id] = self._classical(frame, prompts, object_id, methods[object_id])
        refine_ids = [i for i in ids if methods[i].endswith("+refine")]
        if refine_ids:
            features = features if features is not None else self._encode(frame, geometry)
            soft.update(self._refine(features, geometry, seed, soft, refine_ids))
        return _compose(seed, soft), features

    # -------------------------------------------------------------------------- helpers
    def head(self) -> PromptHead | None:
        """Return the backend's prompt module, or None when these weights have none."""
        return self.backend.prompt_head()

    def _encode(self, frame: np.ndarray, geometry: FrameGeometry) -> FrameFeatures:
        image = frame_to_tensor(frame, geometry, self.backend.device, self.backend.dtype)
        return self.backend.encode(image)

    @torch.inference_mode()
    def _run_head(self, features: FrameFeatures, geometry: FrameGeometry,
                  prompts: SeedPrompts, ids: list[int]) -> list[torch.Tensor]:
        head = self.head()
        parameter = next(head.parameters())
        scale_x = geometry.resized[1] / geometry.input_size[1]
        scale_y = geometry.resized[0] / geometry.input_size[0]
        objects = []
        for object_id in ids:
            box = prompts.boxes.get(object_id)
            clicks = prompts.points.get(object_id, [])
            objects.append(ObjectPrompt(
                None if box is None else (box[0] * scale_x, box[1] * scale_y,
                                          box[2] * scale_x, box[3] * scale_y),
                [((x + 0.5) * scale_x, (y + 0.5) * scale_y, label) for x, y, label in clicks]))
        maps = prompt_maps(objects, geometry.padded).to(parameter.device, parameter.dtype)
        inputs = [f.to(parameter.device, parameter.dtype)
                  for f in (features.skip4, features.skip8, features.tokens)]
        probabilities = torch.sigmoid(head(*inputs, maps).float())[:, 0]  # (N, h4, w4)
        return list(probabilities_to_input(probabilities.float(), geometry).cpu())

    def _classical(self, frame: np.ndarray, prompts: SeedPrompts, object_id: int,
                   method: str) -> torch.Tensor:
        """Return GrabCut's mask or the box itself, as an (H, W) float mask."""
        iterations = self.config.prompts.grabcut_iterations
        if object_id in prompts.boxes:
            box = prompts.boxes[object_id]
            if method.startswith("rect"):
                mask = np.zeros(frame.shape[:2], bool)
                mask[int(box[1]):math.ceil(box[3]), int(box[0]):math.ceil(box[2])] = True
            else:
                mask = grabcut_box(frame, box, iterations)
        else:
            mask = grabcut_clicks(frame, prompts.points[object_id], iterations)
        return torch.from_numpy(mask.astype(np.float32))

    @torch.inference_mode()
    def _refine(self, features: FrameFeatures, geometry: FrameGeometry, seed: np.ndarray,
                soft: dict[int, torch.Tensor], refine_ids: list[int]) -> dict[int, torch.Tensor]:
        """Segment the seed frame against its own coarse masks (one memory frame).

        Returns the refined objects' probabilities at the input size.
        """
        slots = self.backend.model_config.max_objects
        objects = {i: torch.from_numpy((seed == i).astype(np.float32))
                   for i in np.unique(seed) if i}
        objects.update(soft)
        ids = sorted(objects)
        banks = -(-len(ids) // slots)
        stride4 = [_to_stride4(objects[i], geometry) for i in ids]
        mask = torch.zeros(banks, slots + 1, *stride4[0].shape)  # (banks, S+1, h4, w4)
        for index, probabilities in enumerate(stride4):
            mask[index // slots, 1 + index % slots] = probabilities
        mask[:, 0] = background_from_objects(mask[:, 1:], dim=1)
        mask = mask.to(self.backend.device, self.backend.dtype)
        memory = MemoryManager(mem_every=1, max_memory_frames=0, max_seed_frames=1)
        memory.add_seed(MemoryFrame(features.key, features.value, mask,
                                    self.backend.encode_identity(mask)))
        logits = self.backend.segment(features, memory.tensors()).float()
        log_probs = torch.log_softmax(logits, dim=1)  # (banks, S+1, h4, w4)
        places = [(index // slots, 1 + index % slots) for index in range(len(ids))]
        probabilities = merge_banks(log_probs, places)[1:]  # (K, h4, w4), as the tracker
        selected = probabilities[[ids.index(i) for i in refine_ids]]
        refined = probabilities_to_input(selected, geometry).cpu()
        return dict(zip(refine_ids, refined))


def _to_stride4(probability: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """(H, W) at the input size -> (h4, w4) on the padded stride-4 grid."""
    resized = F.interpolate(probability[None, None].float(), size=geometry.resized,
                            mode="bilinear", align_corners=False)
    padded = F.pad(resized, (0, geometry.padded[1] - geometry.resized[1],
                             0, geometry.padded[0] - geometry.resized[0]))
    return mask_to_stride4(padded)[0, 0]


def _compose(seed: np.ndarray, soft: dict[int, torch.Tensor]) -> np.ndarray:
    """Each free pixel to its most likely prompt object above 0.5; never an empty object."""
    ids = sorted(soft)
    stack = torch.stack([soft[i] for i in ids]).numpy()  # (N, H, W)
    best = stack.argmax(axis=0)
    labels = np.where(stack.max(axis=0) > 0.5, np.asarray(ids)[best], 0)
    free = seed == 0
    result = seed.copy()
    result[free] = labels[free]
    for row, object_id in enumerate(ids):
        if not (result == object_id).any():  # weak everywhere: keep its most likely pixels
            peak = stack[row] >= 0.5 * stack[row].max()
            where = peak & free if (peak & free).any() else peak
            result[where] = object_id
    return result
