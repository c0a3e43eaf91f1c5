"""Frame geometry: resize to the processing size, pad to the model stride, and back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from defvos_core.model.encoder import normalize_image
from defvos_core.model.vos_model import STRIDE


@dataclass(frozen=True)
class FrameGeometry:
    """Input size, the resized size the model sees, and that size padded to the stride."""

    input_size: tuple[int, int]  # (H, W) of the camera frame
    resized: tuple[int, int]  # (h, w) after resizing to the processing size
    padded: tuple[int, int]  # (h, w) padded to a multiple of STRIDE

    @staticmethod
    def for_input(height: int, width: int, short_side: int | None) -> "FrameGeometry":
        if height <= 0 or width <= 0:
            raise ValueError(f"empty frame of size {height}x{width}")
        if short_side is None:
            resized = (height, width)
        else:
            scale = short_side / min(height, width)
            resized = (max(1, round(height * scale)), max(1, round(width * scale)))
        padded = tuple(-(-side // STRIDE) * STRIDE for side in resized)
        return FrameGeometry((height, width), resized, padded)


def frame_to_tensor(frame_rgb: np.ndarray, geometry: FrameGeometry, device: torch.device,
                    dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> normalised (1, 3, h, w) padded with zeros (mid-grey)."""
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame_rgb.shape} "
                         f"{frame_rgb.dtype}")
    image = torch.from_numpy(np.ascontiguousarray(frame_rgb)).to(device)
    image = image.permute(2, 0, 1).unsqueeze(0).to(dtype) / 255.0
    if geometry.resized != geometry.input_size:
        image = F.interpolate(image, size=geometry.resized, mode="bilinear", align_corners=False,
                              antialias=True)
    image = normalize_image(image)
    pad_h = geometry.padded[0] - geometry.resized[0]
    pad_w = geometry.padded[1] - geometry.resized[1]
    return F.pad(image, (0, pad_w, 0, pad_h))


def labels_to_onehot(labels: torch.Tensor, num_channels: int) -> torch.Tensor:
    """(H, W) long in [0, num_channels) -> (1, num_channels, H, W) float one-hot."""
    return F.one_hot(labels, num_channels).permute(2, 0, 1).unsqueeze(0).float()


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


def labels_to_stride4(labels: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """Input-size label map -> padded processing size (nearest), for the seed's soft mask."""
    resized = resize_labels(labels, geometry.resized)
    padded = np.zeros(geometry.padded, dtype=np.int64)
    padded[: geometry.resized[0], : geometry.resized[1]] = resized
    return padded
