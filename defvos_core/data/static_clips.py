"""Synthetic training clips from still images (and short video snippets), as AOT/STM pretrain.

A clip is composed of layers, each with its own smooth random trajectory (`warps`):
1. a scene: a photograph (or a DAVIS snippet) filling the frame, seen by a moving camera
   (zoom, rotation, perspective, TPS deformation; borders reflected); its own object is
   labelled or left as unlabelled background;
2. pasted objects (cut out along their masks, scaled, flipped, colour-jittered), each its
   own id, free to leave the frame partly; later pastes occlude earlier ones (their labels
   are overwritten), optionally an unlabelled copy of one of them (a same-looking distractor);
3. occluders: patches of other images (their salient object or a random polygon) that
   cross a labelled object, labelled background;
4. motion / Gaussian blur of some frames, then one colour jitter of the whole clip.
Objects with fewer than `min_object_pixels` in frame 0 become background; the rest get ids
1..K in random order. Frames are (H, W, 3) uint8 RGB, labels (H, W) uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from defvos_core.data.augment import VOID_LABEL, colour_jitter
from defvos_core.data.warps import MotionConfig, Pose, random_trajectory, warp_layer, warp_scene


def _camera_motion() -> MotionConfig:
    return MotionConfig(rotation=1.5, scale=0.03, translation=0.02, shear=0.01,
                        perspective=0.01, deformation=0.01, max_rotation=10.0,
                        max_scale=1.2, max_shear=0.08, max_perspective=0.06,
                        max_deformation=0.04)


@dataclass
class StaticClipConfig:
    """What goes into a synthetic clip; frames, crop, flip, jitter: `ClipSamplingConfig`."""

    # ECSSD-layout folders (images/, masks/) whose training share (`still_images`) is read;
    # [] = ECSSD and DUTS-TR under $DEFVOS_DATA
    roots: list[str] = field(default_factory=list)
    min_objects: int = 1  # labelled objects per clip (scene object included) ...
    max_objects: int = 3  # ... also capped by data.clip.max_objects and the model
    scene_object_probability: float = 0.5  # the scene's own object is labelled
    davis_objects: bool = True  # also paste objects from the run's DAVIS training sequences
    davis_scene_probability: float = 0.3  # the scene is a DAVIS snippet (needs davis_objects)
    davis_object_probability: float = 0.3  # a pasted object comes from DAVIS
    davis_snippet_probability: float = 0.7  # a DAVIS layer is a snippet, not one frame
    object_size: tuple[float, float] = (0.25, 0.6)  # pasted object / frame, longer sides
    max_speed: float = 0.03  # start speed of a pasted object, frame longer sides per frame
    scene_zoom: tuple[float, float] = (1.0, 1.5)  # scene source covers the frame x this
    distractor_probability: float = 0.2  # an unlabelled copy of a pasted object
    occluder_probability: float = 0.3  # per clip: a patch of another image crosses an object
    occluder_size: tuple[float, float] = (0.3, 0.7)  # occluder / target object, longer sides
    object_jitter_probability: float = 0.5  # per pasted object, its own colour jitter
    blur_probability: float = 0.2  # per clip; then each frame blurred with probability 0.5
    min_object_pixels: int = 50  # in frame 0, else the object is dropped to background
    camera: MotionConfig = field(default_factory=_camera_motion)
    object_motion: MotionConfig = field(default_factory=MotionConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects < VOID_LABEL:
            raise ValueError(f"need 1 <= min_objects <= max_objects < 255, got "
                             f"{self.min_objects}, {self.max_objects}")
        for name in ("scene_object_probability", "davis_scene_probability",
                     "davis_object_probability", "davis_snippet_probability",
                     "distractor_probability", "occluder_probability",
                     "object_jitter_probability", "blur_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("object_size", "scene_zoom", "occluder_size"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be 0 < low <= high, got {(low, high)}")


class LayerSource(NamedTuple):
    """One layer's pixels per clip frame: frames (H, W, 3) uint8 and masks (H, W) {0, 1}."""

    frames: list[np.ndarray]  # a still image: the same array num_frames times
    masks: list[np.ndarray]


def cut_out(source: LayerSource, target_size: float, rng: np.random.Generator,
            flip: bool, jitter: bool) -> LayerSource | None:
    """Crop to the mask's box over all frames, scale its longer side to `target_size` px."""
    union = np.logical_or.reduce([mask > 0 for mask in source.masks])
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    scale = target_size / max(y1 - y0, x1 - x0)
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))  # (w, h)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    order: list[int] = []  # index into the distinct (frame, mask) pairs, per clip frame
    distinct: dict[tuple[int, int], int] = {}
    patches, patch_masks = [], []
    for frame, mask in zip(source.frames, source.masks):
        key = (id(frame), id(mask))  # a still image is resized (and jittered) once
        if key not in distinct:
            distinct[key] = len(patches)
            patch = cv2.resize(frame[y0:y1, x0:x1], size, interpolation=interp)
            patch_mask = cv2.resize(mask[y0:y1, x0:x1], size, interpolation=cv2.INTER_NEAREST)
            if flip:
                patch, patch_mask = patch[:, ::-1], patch_mask[:, ::-1]
            patches.append(np.ascontiguousarray(patch))
            patch_masks.append(np.ascontiguousarray(patch_mask))
        order.append(distinct[key])
    if jitter:
        patches = colour_jitter(patches, rng)
    return LayerSource([patches[i] for i in order], [patch_masks[i] for i in order])


def paste_layer(frames: list[np.ndarray], labels: list[np.ndarray], layer: LayerSource,
                poses: list[Pose], label: int) -> None:
    """Alpha-blend a layer into every frame (in place); its covered pixels become `label`."""
    frame_hw = frames[0].shape[:2]
    for t, pose in enumerate(poses):
        warped = warp_layer(layer.frames[t], layer.masks[t], pose, frame_hw)
        if warped is None:
            continue
        top, left, bottom, right = warped.box
        region = frames[t][top:bottom, left:right].astype(np.float32)
        blended = warped.alpha * warped.image + (1 - warped.alpha) * region
        frames[t][top:bottom, left:right] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        labels[t][top:bottom, left:right][warped.mask] = label


def render_scene(scene: LayerSource, label: int, frame_hw: tuple[int, int],
                 config: StaticClipConfig, rng: np.random.Generator
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames and labels (scene object = `label`) of a camera moving over the scene."""
    height, width = frame_hw
    source_h, source_w = scene.frames[0].shape[:2]
    cover = max(height / source_h, width / source_w) * rng.uniform(*config.scene_zoom)
    radius = max(source_h, source_w) / 2 * cover
    slack_x = max(0.0, (source_w * cover - width) / 2)  # the frame stays on the scene
    slack_y = max(0.0, (source_h * cover - height) / 2)
    bounds = (width / 2 - slack_x, height / 2 - slack_y, width / 2 + slack_x,
              height / 2 + slack_y)
    centre = (rng.uniform(bounds[0], bounds[2]), rng.uniform(bounds[1], bounds[3]))
    poses = random_trajectory(len(scene.frames), rng, config.camera, (source_h, source_w),
                              centre, radius, frame_hw, bounds)
    frames, labels = [], []
    for frame, mask, pose in zip(scene.frames, scene.masks, poses):
        scene_labels = (mask > 0).astype(np.uint8) * label
        warped_frame, warped_labels = warp_scene(frame, scene_labels, pose, frame_hw)
        frames.append(warped_frame)
        labels.append(warped_labels)
    return frames, labels


def object_trajectory(layer: LayerSource, frame_hw: tuple[int, int], config: StaticClipConfig,
                      rng: np.random.Generator, centre: tuple[float, float] | None = None,
                      velocity: tuple[float, float] | None = None) -> list[Pose]:
    """Poses of a pasted layer: a random (or given) start inside the frame, then free motion."""
    height, width = frame_hw
    patch_h, patch_w = layer.frames[0].shape[:2]
    if centre is None:
        centre = (rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height)
    if velocity is None:
        angle = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0, config.max_speed) * max(frame_hw)
        velocity = (speed * math.cos(angle), speed * math.sin(angle))
    return random_trajectory(len(layer.frames), rng, config.object_motion, (patch_h, patch_w),
                             centre, max(patch_h, patch_w) / 2, frame_hw,
                             (0.0, 0.0, float(width), float(height)), velocity)


def occluder_trajectory(layer: LayerSource, target: np.ndarray, config: StaticClipConfig,
                        rng: np.random.Generator) -> list[Pose]:
    """Poses that carry a layer across the object `target` (H, W) bool of frame 0."""
    rows, cols = np.nonzero(target)
    centre = np.array([cols.mean(), rows.mean()])
    half = np.array([np.ptp(cols) + 1, np.ptp(rows) + 1]) / 2
    angle = rng.uniform(0, 2 * math.pi)
    start = centre + np.array([math.cos(angle), math.sin(angle)]) * half * rng.uniform(0.5, 1.2)
    crossing = max(1, (len(layer.frames) - 1) / 2)  # over the object halfway through
    velocity = (centre - start) / crossing
    return object_trajectory(layer, target.shape, config, rng, tuple(start), tuple(velocity))


def occluder_layer(source: LayerSource, target: np.ndarray, config: StaticClipConfig,
                   rng: np.random.Generator) -> LayerSource | None:
    """Cut a patch of `source` shaped by its object mask or a random polygon, sized to `target`."""
    rows, cols = np.nonzero(target)
    if rows.size == 0:
        return None
    size = max(np.ptp(rows), np.ptp(cols)) * rng.uniform(*config.occluder_size)
    if rng.random() < 0.5:
        shaped = source
    else:  # a random convex polygon in a random window of the image
        height, width = source.frames[0].shape[:2]
        side = int(min(height, width) * rng.uniform(0.3, 0.8))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        points = rng.uniform(0, side, (int(rng.integers(4, 8)), 2)) + (left, top)
        polygon = np.zeros((height, width), np.uint8)
        cv2.fillConvexPoly(polygon, cv2.convexHull(points.astype(np.int32)), 1)
        shaped = LayerSource(source.frames, [polygon] * len(source.frames))
    return cut_out(shaped, max(4.0, size), rng, flip=rng.random() < 0.5, jitter=False)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """Normalised (length, length) line kernel at `angle` degrees."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2] = 1.0
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return kernel / max(float(kernel.sum()), 1e-6)


def blur_frames(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Blur each frame with probability 0.5: motion blur (3-9 px) or Gaussian (sigma 0.5-1.5)."""
    blurred = []
    for frame in frames:
        if rng.random() < 0.5:
            if rng.random() < 0.5:
                kernel = motion_kernel(int(rng.choice([3, 5, 7, 9])), rng.uniform(0, 180))
                frame = cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
            else:
                frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.5, 1.5))
        blurred.append(frame)
    return blurred


def renumber(labels: list[np.ndarray], min_pixels: int, max_objects: int,
             rng: np.random.Generator) -> tuple[list[np.ndarray], int]:
    """Keep objects with >= min_pixels in frame 0 (at most max_objects), ids 1..K at random."""
    counts = np.bincount(labels[0].ravel(), minlength=256)
    counts[0] = counts[VOID_LABEL] = 0
    visible = np.flatnonzero(counts >= max(1, min_pixels))
    if visible.size > max_objects:
        visible = np.sort(rng.choice(visible, max_objects, replace=False))
    lookup = np.zeros(256, np.uint8)
    lookup[VOID_LABEL] = VOID_LABEL
    lookup[visible[rng.permutation(visible.size)]] = np.arange(1, visible.size + 1)
    return [lookup[label_map] for label_map in labels], int(visible.size)


@dataclass
class ClipRecipe:
    """The sources of one clip, drawn by the caller; ids are given in this order."""

    scene: LayerSource
    scene_labelled: bool
    objects: list[LayerSource]  # labelled pasted objects
    occluder_sources: list[LayerSource] = field(default_factory=list)
    distractor: bool = False  # paste an unlabelled copy of one object too


def compose_clip(recipe: ClipRecipe, frame_hw: tuple[int, int], config: StaticClipConfig,
                 rng: np.random.Generator, flip_probability: float = 0.5,
                 jitter: bool = True, max_objects: int | None = None
                 ) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Render a recipe into frames, labels (ids 1..K) and K (see the module docstring)."""
    scene = recipe.scene
    if rng.random() < flip_probability:
        scene = LayerSource([np.ascontiguousarray(f[:, ::-1]) for f in scene.frames],
                            [np.ascontiguousarray(m[:, ::-1]) for m in scene.masks])
    scene_id = len(recipe.objects) + 1
    frames, labels = render_scene(scene, scene_id if recipe.scene_labelled else 0, frame_hw,
                                  config, rng)
    layers: list[tuple[LayerSource, int]] = []
    for object_id, source in enumerate(recipe.objects, start=1):
        target = rng.uniform(*config.object_size) * max(frame_hw)
        layer = cut_out(source, target, rng, rng.random() < flip_probability,
                        rng.random() < config.object_jitter_probability)
        if layer is not None:
            layers.append((layer, object_id))
    if recipe.distractor and layers:
        original, _ = layers[int(rng.integers(len(layers)))]
        target = rng.uniform(*config.object_size) * max(frame_hw)
        copy = cut_out(original, target, rng, rng.random() < 0.5, jitter=False)
        if copy is not None:
            layers.append((copy, 0))
    for index in rng.permutation(len(layers)):  # random paste order: random occlusions
        layer, object_id = layers[index]
        paste_layer(frames, labels, layer, object_trajectory(layer, frame_hw, config, rng),
                    object_id)
    for source in recipe.occluder_sources:
        present = [i for i in np.unique(labels[0]) if i not in (0, VOID_LABEL)]
        if not present:
            break
        target = labels[0] == present[int(rng.integers(len(present)))]
        layer = occluder_layer(source, target, config, rng)
        if layer is not None:
            paste_layer(frames, labels, layer, occluder_trajectory(layer, target, config, rng),
                        0)
    if rng.random() < config.blur_probability:
        frames = blur_frames(frames, rng)
    if jitter:
        frames = colour_jitter(frames, rng)
    cap = config.max_objects if max_objects is None else min(max_objects, config.max_objects)
    labels, num_objects = renumber(labels, config.min_object_pixels, cap, rng)
    return frames, labels, num_objects
