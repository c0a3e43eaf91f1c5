"""Frame geometry: resize to the processing size, pad to the model stride, and back."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from defvos_core.errors import FrameError
from defvos_core.model.encoder import normalize_image
from defvos_core.model.vos_model import STRIDE, mask_to_stride4

#: `input_labels` upsamples this many bytes of channels at a time (a few channels at 1080p).
LABEL_CHUNK_BYTES = 32 * 2**20
#: Long side / short side of the processing shapes: a frame is padded up to the first of
#: these that holds it. Cameras (1:1, 4:3, 3:2, 16:9, 21:9) keep the shape they had when
#: each side was only padded to the stride (5:4 pads to 4:3); every other size shares one of
#: a few shapes, so that per-shape kernel caches and buffers stay bounded (a node fed frames of
#: every size would otherwise grow with the sizes it has seen; README, Limits).
ASPECT_STEPS = (1.0, 4 / 3, 3 / 2, 16 / 9, 2.0, 64 / 27, 3.0, 4.0, 6.0, 8.0)
#: A short side shrunk below the configured size by `max_long_side` (5.3:1 to 8:1 frames at
#: the defaults) is padded to a multiple of this (at most the configured size) instead of
#: the stride.
FREE_SHORT_STEP = 4 * STRIDE


@dataclass(frozen=True)
class FrameGeometry:
    """Input size, the resized size the model sees, and its padded processing shape."""

    input_size: tuple[int, int]  # (H, W) of the camera frame
    resized: tuple[int, int]  # (h, w) after resizing to the processing size
    padded: tuple[int, int]  # (h, w) a multiple of STRIDE (`processing_shape`)

    @staticmethod
    def for_input(height: int, width: int, short_side: int | None,
                  max_long_side: int) -> "FrameGeometry":
        """Return the geometry of `height` x `width` frames.

        The short side is resized to `short_side` (None: kept), then both shrink if needed
        so that the long side is at most `max_long_side`; the result is padded to one of a
        few processing shapes (`processing_shape`), or with `short_side` None (shapes follow
        the input anyway) each side to STRIDE.
        """
        if height <= 0 or width <= 0:
            raise ValueError(f"empty frame of size {height}x{width}")
        scale = 1.0 if short_side is None else short_side / min(height, width)
        # the long side capped: the short side is no longer the configured size
        free_short = short_side is not None and max_long_side / max(height, width) < scale
        scale = min(scale, max_long_side / max(height, width))
        if scale == 1.0:
            resized = (height, width)
        else:
            resized = (max(1, round(height * scale)), max(1, round(width * scale)))
        if short_side is None:  # the input size, as asked: each side only to the stride
            return FrameGeometry((height, width), resized, (_pad(resized[0]), _pad(resized[1])))
        return FrameGeometry((height, width), resized,
                             processing_shape(resized, max_long_side,
                                              _pad(short_side) if free_short else None))


def _pad(side: int, step: int = STRIDE) -> int:
    return -(-side // step) * step


def processing_shape(resized: tuple[int, int], max_long_side: int,
                     free_short_limit: int | None = None) -> tuple[int, int]:
    """Return the padded shape (h, w) the model processes a `resized` frame at.

    The short side is padded to STRIDE; with `free_short_limit` (it was shrunk below the
    configured size by `max_long_side`) to FREE_SHORT_STEP, at most that limit, and the
    padded short side is then the base of the steps. The long side is padded to the first
    `ASPECT_STEPS` multiple of the short side that holds it, padded to STRIDE (at most
    `max_long_side` padded to STRIDE, or the long side itself beyond). So for a given
    processing size the model sees a bounded set of shapes, whatever sizes the frames
    come in.
    """
    short, long = sorted(resized)
    free_short = free_short_limit is not None
    padded_short = min(_pad(short, FREE_SHORT_STEP), free_short_limit) if free_short \
        else _pad(short)
    base = padded_short if free_short else short  # the configured size: a fixed base
    ceiling = max(_pad(max_long_side), _pad(long))
    steps = (min(_pad(math.ceil(base * ratio - 1e-6)), ceiling) for ratio in ASPECT_STEPS)
    padded_long = max(next((side for side in steps if side >= long), ceiling), padded_short)
    if resized[0] <= resized[1]:
        return padded_short, padded_long
    return padded_long, padded_short


def check_aspect_ratio(height: int, width: int, max_aspect_ratio: float) -> None:
    """Raise FrameError "frame_shape" for an empty frame or one beyond `max_aspect_ratio`:1."""
    accepted = f"accepted: aspect ratios up to {max_aspect_ratio:g}:1 either way " \
               "(TrackerConfig.max_aspect_ratio)"
    if min(height, width) == 0:
        raise FrameError("frame_shape", f"frame is {width}x{height} (empty); {accepted}")
    ratio = max(height, width) / min(height, width)
    if ratio > max_aspect_ratio:
        raise FrameError("frame_shape", f"frame is {width}x{height}, aspect ratio {ratio:.1f}:1; "
                         f"{accepted}")


def frame_to_tensor(frame_rgb: np.ndarray, geometry: FrameGeometry, device: torch.device,
                    dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> normalised (1, 3, h, w) padded with zeros (mid-grey), in `dtype`.

    Resized and normalised in float32 (PyTorch's antialiased resize has no bfloat16 kernel),
    then cast.
    """
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame_rgb.shape} "
                         f"{frame_rgb.dtype}")
    image = torch.from_numpy(np.ascontiguousarray(frame_rgb)).to(device)
    image = image.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    if geometry.resized != geometry.input_size:
        image = F.interpolate(image, size=geometry.resized, mode="bilinear", align_corners=False,
                              antialias=True)
    image = normalize_image(image)
    pad_h = geometry.padded[0] - geometry.resized[0]
    pad_w = geometry.padded[1] - geometry.resized[1]
    return F.pad(image, (0, pad_w, 0, pad_h)).to(dtype)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label map to `size` (h, w)."""
    if labels.shape == tuple(size):
        return labels
    tensor = torch.from_numpy(labels.astype(np.int64))[None, None].float()
    resized = F.interpolate(tensor, size=size, mode="nearest")
    return resized[0, 0].to(torch.int64).numpy()


def probabilities_to_input(probabilities: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """Stride-4 probabilities (K, h/4, w/4) of the padded frame -> (K, H, W) at the input size."""
    channels = probabilities.shape[0]
    upsampled = F.interpolate(probabilities[None], size=geometry.padded, mode="bilinear",
                              align_corners=False)
    cropped = upsampled[:, :, : geometry.resized[0], : geometry.resized[1]]
    if geometry.resized != geometry.input_size:
        cropped = F.interpolate(cropped, size=geometry.input_size, mode="bilinear",
                                align_corners=False)
    return cropped.reshape(channels, *geometry.input_size)


def channel_argmax(chunks: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest channel per pixel (first on ties) of (K, H, W) scores given in channel chunks.

    Returns (index (H, W) long, value (H, W)): `scores.argmax(0)` and `scores.max(0)` of the
    chunks concatenated, without holding them all. Elementwise passes also beat CPU argmax's
    slow strided reduction (17 ms at 240x427 here).
    """
    best = best_value = None
    index = 0
    for scores in chunks:
        for channel in scores:
            if best_value is None:
                best_value = channel.clone()
                best = torch.zeros(channel.shape, dtype=torch.long, device=channel.device)
            else:
                better = channel > best_value
                best.masked_fill_(better, index)
                torch.maximum(best_value, channel, out=best_value)
            index += 1
    if best is None:
        raise ValueError("channel_argmax needs at least one channel")
    return best, best_value


def channels_per_chunk(geometry: FrameGeometry, chunk_bytes: int) -> int:
    """How many float32 channels of the input (or padded) size fit in `chunk_bytes` (>= 1)."""
    height, width = geometry.input_size
    channel_bytes = 4 * max(height * width, geometry.padded[0] * geometry.padded[1])
    return max(1, chunk_bytes // channel_bytes)


def input_labels(probabilities: torch.Tensor, geometry: FrameGeometry,
                 chunk_bytes: int = LABEL_CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """Winning channel of stride-4 probabilities (K, h/4, w/4) at the input size, and its value.

    Same as `channel_argmax` of `probabilities_to_input(probabilities, geometry)`, but the
    channels are upsampled a chunk of `chunk_bytes` at a time: peak memory grows with the
    input size, not with K times it (255 channels at 1080p would need 2 GB at once).
    """
    chunk = channels_per_chunk(geometry, chunk_bytes)
    chunks = (probabilities_to_input(probabilities[start:start + chunk], geometry)
              for start in range(0, probabilities.shape[0], chunk))
    return channel_argmax(chunks)


def label_sums(values: torch.Tensor, best: torch.Tensor, geometry: FrameGeometry,
               chunk_bytes: int = LABEL_CHUNK_BYTES) -> list[float]:
    """Sum each channel of stride-4 `values` (K, h/4, w/4) over the pixels it won.

    At the input size, over the pixels that `best` ((H, W) winning channel, 0 background)
    gives to it (channel k: k + 1); upsampled a chunk of channels at a time, as
    `input_labels`.
    """
    chunk = channels_per_chunk(geometry, chunk_bytes)
    sums = []
    for start in range(0, values.shape[0], chunk):
        upsampled = probabilities_to_input(values[start:start + chunk], geometry)
        for offset, channel in enumerate(upsampled):
            sums.append(float(channel[best == start + offset + 1].double().sum()))
    return sums


def labels_to_stride4(labels: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """Input-size label map -> padded processing size (nearest), for the seed's soft mask."""
    resized = resize_labels(labels, geometry.resized)
    padded = np.zeros(geometry.padded, dtype=np.int64)
    padded[: geometry.resized[0], : geometry.resized[1]] = resized
    return padded


def seed_to_stride4(seed: np.ndarray, object_ids: list[int], geometry: FrameGeometry
                    ) -> tuple[torch.Tensor, list[int]]:
    """Soft masks (N, h/4, w/4) of a seed's objects at stride 4 of the padded frame; tiny ids.

    An object's mask is its share of each 4x4 cell of the seed resized to the processing size.
    An object that would win no cell (share below one half everywhere, or nothing left
    after resizing) is tiny: it instead fills every cell its input pixels fall in, so it
    keeps a footprint at the finest scale, and cells it shares are normalised to sum to 1.
    """
    padded = torch.from_numpy(labels_to_stride4(seed, geometry))
    masks = torch.stack([mask_to_stride4((padded == object_id).float()[None, None])[0, 0]
                         for object_id in object_ids])  # (N, h4, w4)
    tiny = [object_id for row, object_id in enumerate(object_ids) if masks[row].max() < 0.5]
    if not tiny:
        return masks, []
    cell_scale = (geometry.resized[0] / seed.shape[0] / 4, geometry.resized[1] / seed.shape[1] / 4)
    for object_id in tiny:
        ys, xs = np.nonzero(seed == object_id)
        rows = np.minimum(((ys + 0.5) * cell_scale[0]).astype(np.int64), masks.shape[1] - 1)
        cols = np.minimum(((xs + 0.5) * cell_scale[1]).astype(np.int64), masks.shape[2] - 1)
        row = object_ids.index(object_id)
        masks[row, torch.from_numpy(rows), torch.from_numpy(cols)] = 1.0
    masks /= masks.sum(0).clamp(min=1)
    return masks, tiny
