"""defvos_interfaces messages <-> the tracker's inputs and results (no ROS graph, no state).

- `parse_prompts`: the objects of an ``~/add_objects`` request -> `Prompts` (boxes, points
  and masks keyed by object id string), validated with typed `SeedError` kinds.
- `tracked_objects_message`: a `TrackResult` + presence + the id map -> TrackedObjectArray
  (vision_msgs-style boxes: centre and size in input-image pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from defvos_interfaces.msg import BoundingBox2D, ObjectPrompt, TrackedObject, TrackedObjectArray
from std_msgs.msg import Header

from defvos_core.errors import SeedError
from defvos_core.label_boxes import label_boxes
from defvos_core.inference.presence import Presence
from defvos_core.inference.tracker import TrackResult
from defvos_ros.image_conversion import ImageConversionError, image_to_labels

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
Point = tuple[float, float, int]  # x, y, label (1 positive, 0 negative)


@dataclass
class Prompts:
    """Prompts of one request by object id (each id in exactly one of the three)."""

    boxes: dict[str, Box] = field(default_factory=dict)
    points: dict[str, list[Point]] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # (H, W) bool

    @property
    def ids(self) -> list[str]:
        """Return every object id, in request order within each kind."""
        return list(self.masks) + list(self.boxes) + list(self.points)


def box_corners(box: BoundingBox2D) -> Box:
    """Return a vision_msgs-style box (centre + size) as (x0, y0, x1, y1)."""
    cx, cy = box.center.position.x, box.center.position.y
    return (cx - box.size_x / 2, cy - box.size_y / 2, cx + box.size_x / 2, cy + box.size_y / 2)


def box_message(x0: float, y0: float, x1: float, y1: float) -> BoundingBox2D:
    """Return (x0, y0, x1, y1) as a vision_msgs-style box (centre + size)."""
    box = BoundingBox2D()
    box.center.position.x, box.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
    box.size_x, box.size_y = float(x1 - x0), float(y1 - y0)
    return box


def parse_prompts(objects: list[ObjectPrompt]) -> Prompts:
    """Return the prompts of an ``~/add_objects`` request; SeedError names the object at fault."""
    prompts = Prompts()
    seen: set[str] = set()
    for prompt in objects:
        object_id = prompt.id
        if not object_id:
            raise SeedError('prompt_id', 'an object id must be a non-empty string')
        if object_id in seen:
            raise SeedError('prompt_id', f"object id '{object_id}' is given twice")
        seen.add(object_id)
        if prompt.kind == ObjectPrompt.KIND_BOX:
            x0, y0, x1, y1 = box_corners(prompt.box)
            if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
                raise SeedError('prompt_box', f"object '{object_id}': box of size "
                                f'{prompt.box.size_x}x{prompt.box.size_y} is empty or not '
                                'finite; expected size_x, size_y > 0')
            prompts.boxes[object_id] = (x0, y0, x1, y1)
        elif prompt.kind == ObjectPrompt.KIND_POINTS:
            labels = list(prompt.point_labels)
            if not prompt.points or len(labels) != len(prompt.points):
                raise SeedError('prompt_points', f"object '{object_id}': {len(prompt.points)} "
                                f'points and {len(labels)} point_labels; expected one label '
                                'per point and at least one point')
            points = [(float(p.x), float(p.y), int(label))
                      for p, label in zip(prompt.points, labels)]
            if any(label not in (0, 1) for _, _, label in points):
                raise SeedError('prompt_points', f"object '{object_id}': point labels must be "
                                f'1 (object) or 0 (background), got {labels}')
            prompts.points[object_id] = points
        elif prompt.kind == ObjectPrompt.KIND_MASK:
            try:
                mask = image_to_labels(prompt.mask) != 0
            except ImageConversionError as error:
                raise SeedError('prompt_mask', f"object '{object_id}': {error}") from error
            if not mask.any():
                raise SeedError('prompt_mask', f"object '{object_id}': mask has no object "
                                'pixel (every pixel is 0)')
            prompts.masks[object_id] = mask
        else:
            raise SeedError('prompt_kind', f"object '{object_id}': unknown prompt kind "
                            f'{prompt.kind}; expected KIND_BOX (0), KIND_POINTS (1) or '
                            'KIND_MASK (2)')
    if not prompts.ids:
        raise SeedError('prompt_id', 'the request names no object')
    return prompts


def tracked_objects_message(result: TrackResult, presence: dict[int, Presence],
                            ids: dict[int, str], header: Header) -> TrackedObjectArray:
    """Return one TrackedObject per tracked object (ascending mask value), header copied."""
    labels = result.labels
    pixels = labels.size
    boxes = label_boxes(labels, result.object_ids)
    msg = TrackedObjectArray(header=header)
    for value in result.object_ids:
        state = presence.get(value)
        item = TrackedObject(id=ids.get(value, str(value)), mask_value=value,
                             score=float(result.confidence.get(value, 0.0)),
                             area_fraction=result.area.get(value, 0) / pixels,
                             present=bool(state.present) if state else False,
                             frames_since_seen=state.frames_since_seen if state else 0)
        if value in boxes:
            item.bbox = box_message(*boxes[value])
        msg.objects.append(item)
    return msg
