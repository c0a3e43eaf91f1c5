"""Clip augmentations in numpy/cv2, applied consistently to every frame of a clip.

A clip is a list of frames, each (H, W, 3) uint8 RGB, and a list of label maps, each
(H, W) uint8 (0 background, 1..254 objects, 255 void). Frames are resampled bilinearly,
label maps with nearest neighbour. Functions never modify their inputs in place.
Also: `compose_objects` (paste an object from another clip) and `static_image_clip`
(a pseudo-video from one image), as in AOT/DeAOT training.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

VOID_LABEL = 255

Frames = list[np.ndarray]  # each (H, W, 3) uint8 RGB
LabelMaps = list[np.ndarray]  # each (H, W) uint8


def object_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted object ids present in a label map (neither 0 nor void)."""
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    return present[(present != 0) & (present != VOID_LABEL)]


def _check_clip(frames: Frames, masks: LabelMaps) -> tuple[int, int]:
    if not frames or len(frames) != len(masks):
        raise ValueError(f"a clip needs as many label maps as frames (>0), got "
                         f"{len(frames)} frames and {len(masks)} label maps")
    height, width = frames[0].shape[:2]
    for frame, mask in zip(frames, masks):
        if frame.shape[:2] != (height, width) or mask.shape != (height, width):
            raise ValueError(f"clip frames/label maps must all be {height}x{width}, got "
                             f"{frame.shape} and {mask.shape}")
    return height, width


def resize_clip(frames: Frames, masks: LabelMaps, size_hw: tuple[int, int]
                ) -> tuple[Frames, LabelMaps]:
    """Resize all frames (bilinear, area when shrinking) and label maps (nearest)."""
    height, width = _check_clip(frames, masks)
    new_h, new_w = size_hw
    if (new_h, new_w) == (height, width):
        return list(frames), list(masks)
    shrinking = new_h * new_w < height * width
    frame_interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return ([cv2.resize(f, (new_w, new_h), interpolation=frame_interp) for f in frames],
            [cv2.resize(m, (new_w, new_h), interpolation=cv2.INTER_NEAREST) for m in masks])


def random_scale(frames: Frames, masks: LabelMaps, rng: np.random.Generator,
                 scale_range: tuple[float, float] = (0.8, 1.2),
                 min_size: tuple[int, int] | None = None) -> tuple[Frames, LabelMaps]:
    """Rescale the clip by one random factor; with `min_size` (h, w) never below it."""
    height, width = _check_clip(frames, masks)
    scale = rng.uniform(*scale_range)
    if min_size is not None:
        scale = max(scale, min_size[0] / height, min_size[1] / width)
    new_h, new_w = math.ceil(height * scale - 1e-6), math.ceil(width * scale - 1e-6)
    return resize_clip(frames, masks, (new_h, new_w))


def random_crop(frames: Frames, masks: LabelMaps, crop_size: tuple[int, int],
                rng: np.random.Generator, attempts: int = 5, min_object_pixels: int = 20
                ) -> tuple[Frames, LabelMaps]:
    """Crop every frame to `crop_size` (h, w) at one random place.

    Up to `attempts` windows are drawn; the first that keeps every object of the first
    label map (at least `min_object_pixels` of each, or all of a smaller one) wins, else the
    one keeping most objects. A clip smaller than the crop is padded (frames 0, labels void).
    """
    height, width = _check_clip(frames, masks)
    crop_h, crop_w = crop_size
    pad_h, pad_w = max(0, crop_h - height), max(0, crop_w - width)
    if pad_h or pad_w:
        frames = [cv2.copyMakeBorder(f, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
                  for f in frames]
        masks = [cv2.copyMakeBorder(m, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                    value=VOID_LABEL) for m in masks]
        height, width = height + pad_h, width + pad_w
    reference_ids = object_ids(masks[0])
    full_counts = np.bincount(masks[0].ravel(), minlength=256)[reference_ids]
    needed = np.minimum(full_counts, min_object_pixels)
    best_score, best_corner = None, (0, 0)
    for _ in range(max(1, attempts)):
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        window = masks[0][top:top + crop_h, left:left + crop_w]
        counts = np.bincount(window.ravel(), minlength=256)[reference_ids]
        score = (int((counts >= needed).sum()), int(counts.sum()))
        if best_score is None or score > best_score:
            best_score, best_corner = score, (top, left)
        if score[0] == len(reference_ids):
            break
    top, left = best_corner
    return ([np.ascontiguousarray(f[top:top + crop_h, left:left + crop_w]) for f in frames],
            [np.ascontiguousarray(m[top:top + crop_h, left:left + crop_w]) for m in masks])


def horizontal_flip(frames: Frames, masks: LabelMaps, rng: np.random.Generator,
                    probability: float = 0.5) -> tuple[Frames, LabelMaps]:
    """Mirror the whole clip left-right with `probability` (always draws one number)."""
    _check_clip(frames, masks)
    if rng.random() >= probability:
        return list(frames), list(masks)
    return ([np.ascontiguousarray(f[:, ::-1]) for f in frames],
            [np.ascontiguousarray(m[:, ::-1]) for m in masks])


def colour_jitter(frames: Frames, rng: np.random.Generator, brightness: float = 0.3,
                  contrast: float = 0.3, saturation: float = 0.3, hue: float = 0.03) -> Frames:
    """One random brightness/contrast/saturation/hue change applied to every frame."""
    brightness_factor = rng.uniform(1 - brightness, 1 + brightness)
    contrast_factor = rng.uniform(1 - contrast, 1 + contrast)
    saturation_factor = rng.uniform(1 - saturation, 1 + saturation)
    hue_shift = int(round(rng.uniform(-hue, hue) * 180))  # OpenCV hue runs 0..179
    luminance_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    jittered = []
    for frame in frames:
        pixels = frame.astype(np.float32) * brightness_factor
        grey = pixels @ luminance_weights  # (H, W)
        pixels = (pixels - grey.mean()) * contrast_factor + grey.mean()
        grey = (pixels @ luminance_weights)[..., None]
        pixels = grey + (pixels - grey) * saturation_factor
        out = np.clip(pixels, 0, 255).astype(np.uint8)
        if hue_shift:
            hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + hue_shift) % 180).astype(np.uint8)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        jittered.append(out)
    return jittered


def augment_clip(frames: Frames, masks: LabelMaps, rng: np.random.Generator,
                 crop_size: tuple[int, int], scale_range: tuple[float, float] = (0.8, 1.2),
                 flip_probability: float = 0.5, jitter: bool = True
                 ) -> tuple[Frames, LabelMaps]:
    """Scale (never below the crop), object-preferring crop, flip, then optional jitter."""
    frames, masks = random_scale(frames, masks, rng, scale_range, min_size=crop_size)
    frames, masks = random_crop(frames, masks, crop_size, rng)
    frames, masks = horizontal_flip(frames, masks, rng, flip_probability)
    if jitter:
        frames = colour_jitter(frames, rng)
    return frames, masks


def compose_objects(clip_frames: Frames, clip_masks: LabelMaps, donor_frames: Frames,
                    donor_masks: LabelMaps, rng: np.random.Generator,
                    size_range: tuple[float, float] = (0.25, 0.6),
                    motion_probability: float = 0.5, max_motion: float = 0.03
                    ) -> tuple[Frames, LabelMaps]:
    """Paste one donor object into every frame of the clip under a new id (max id + 1).

    The donor object (preferring one visible in all donor frames) is cut out of the box
    around it over the clip, randomly flipped and scaled to `size_range` of the largest
    size that fits the clip, and placed fully inside the frame: at one place (keeping the
    donor's own motion) or, with `motion_probability`, drifting by up to `max_motion` of
    the frame size per frame. Donor frame t is used for clip frame t (the last donor frame
    beyond its length; the nearest frame showing the object where it is missing). Pasted
    pixels overwrite frames and labels (occlusion). Returns copies; unchanged copies when
    the donor shows no object or no id is left.
    """
    height, width = _check_clip(clip_frames, clip_masks)
    _check_clip(donor_frames, donor_masks)
    frames = [f.copy() for f in clip_frames]
    masks = [m.copy() for m in clip_masks]
    num_frames, num_donor = len(frames), len(donor_frames)
    donor_ids = [object_ids(m) for m in donor_masks]
    all_ids = np.unique(np.concatenate(donor_ids))
    existing = [int(object_ids(m).max(initial=0)) for m in clip_masks]
    new_id = max(existing) + 1
    if all_ids.size == 0 or new_id >= VOID_LABEL:
        return frames, masks
    frames_showing = np.array([sum(int(i in ids) for ids in donor_ids) for i in all_ids])
    donor_id = int(rng.choice(all_ids[frames_showing == frames_showing.max()]))
    showing = [t for t in range(num_donor) if donor_id in donor_ids[t]]
    source = []  # donor frame index used for each clip frame
    for t in range(num_frames):
        wanted = min(t, num_donor - 1)
        source.append(min(showing, key=lambda d: (abs(d - wanted), d)))
    union = np.zeros(donor_masks[0].shape, dtype=bool)
    for d in set(source):
        union |= donor_masks[d] == donor_id
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    box_h, box_w = y1 - y0, x1 - x0
    scale = min(height / box_h, width / box_w) * rng.uniform(*size_range)
    patch_h = int(np.clip(round(box_h * scale), 1, height))
    patch_w = int(np.clip(round(box_w * scale), 1, width))
    flip = rng.random() < 0.5
    top = rng.uniform(0, height - patch_h)
    left = rng.uniform(0, width - patch_w)
    offsets = np.zeros((num_frames, 2))  # (dy, dx) per frame
    if rng.random() < motion_probability and num_frames > 1:
        steps = rng.uniform(-1, 1, (num_frames - 1, 2)) * max_motion * np.array([height, width])
        offsets[1:] = np.cumsum(steps, axis=0)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    for t, d in enumerate(source):
        patch = cv2.resize(donor_frames[d][y0:y1, x0:x1], (patch_w, patch_h),
                           interpolation=interp).astype(np.float32)
        coverage = cv2.resize((donor_masks[d][y0:y1, x0:x1] == donor_id).astype(np.float32),
                              (patch_w, patch_h), interpolation=interp)  # (h, w) in [0, 1]
        hard = coverage >= 0.5
        if not hard.any():  # a tiny object shrunk below half a pixel: keep its best pixel
            hard = coverage >= coverage.max()
        if flip:
            patch, hard = patch[:, ::-1], hard[:, ::-1]
        alpha = np.maximum(hard, cv2.GaussianBlur(hard.astype(np.float32), (3, 3), 0))[..., None]
        row = int(np.clip(round(top + offsets[t, 0]), 0, height - patch_h))
        col = int(np.clip(round(left + offsets[t, 1]), 0, width - patch_w))
        region = frames[t][row:row + patch_h, col:col + patch_w].astype(np.float32)
        blended = alpha * patch + (1 - alpha) * region
        frames[t][row:row + patch_h, col:col + patch_w] = np.clip(blended + 0.5, 0, 255)
        masks[t][row:row + patch_h, col:col + patch_w][hard] = new_id
    return frames, masks


def static_image_clip(image: np.ndarray, mask: np.ndarray, num_frames: int,
                      rng: np.random.Generator, max_rotation: float = 3.0,
                      max_scale_step: float = 0.03, max_translation_step: float = 0.03
                      ) -> tuple[Frames, LabelMaps]:
    """Make a pseudo-video from one image (H, W, 3) and its label map (H, W).

    Frame 0 is the image itself; later frames follow a smooth random walk (with momentum)
    of rotation (degrees per step), log-scale and translation (fraction of the size per
    step) about the centre, bounded to +-15 degrees, x0.85..1.18 and +-15 % shift.
    Borders are reflected in frames and labels alike.
    """
    height, width = _check_clip([image], [mask])
    frames, masks = [image.copy()], [mask.copy()]
    step_size = np.array([max_rotation, max_scale_step,
                          max_translation_step * width, max_translation_step * height])
    limits = np.array([15.0, math.log(1.18), 0.15 * width, 0.15 * height])
    params = np.zeros(4)  # (angle deg, log scale, shift x px, shift y px)
    velocity = np.zeros(4)
    centre = ((width - 1) / 2, (height - 1) / 2)
    for _ in range(1, num_frames):
        velocity = 0.5 * velocity + rng.uniform(-1, 1, 4) * step_size
        params = np.clip(params + velocity, -limits, limits)
        matrix = cv2.getRotationMatrix2D(centre, float(params[0]), float(math.exp(params[1])))
        matrix[:, 2] += params[2:]
        frames.append(cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT_101))
        masks.append(cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_REFLECT_101))
    return frames, masks
