"""Helpers of the tracker tests: small models, a perfect-tracking stand-in backend, the clip.

Import what a test needs: ``from tracker_helpers import make_tracker, sample_clip``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from defvos_core.config import TrackerConfig, student_config
from defvos_core.data.masks import read_label_map
from defvos_core.data.video_io import list_frame_files, read_rgb
from defvos_core.inference.backend import Backend, TorchBackend
from defvos_core.inference.tracker import Tracker
from defvos_core.model.checkpoint import DEFAULT_STUDENT_WEIGHTS
from defvos_core.model.propagation import MemoryTensors
from defvos_core.model.vos_model import FrameFeatures, VOSModel

SAMPLE = DEFAULT_STUDENT_WEIGHTS.parent / "sample" / "bear"


def tiny_model(max_objects: int = 10) -> VOSModel:
    """Return a small random-weights model (fast; its masks mean nothing)."""
    torch.manual_seed(0)
    config = student_config(pretrained_encoder=False, embed_dim=32, decoder_dim=16,
                            sample_grid=(2, 3), short_term_radius=1, max_objects=max_objects)
    return VOSModel(config)


def make_tracker(max_objects: int = 10, **tracker_options) -> Tracker:
    """Return a tracker over `tiny_model` at the input size with a short memory."""
    options = dict(size=None, mem_every=2, max_memory_frames=3, max_seed_frames=2)
    options.update(tracker_options)
    return Tracker(TorchBackend(tiny_model(max_objects)), TrackerConfig(**options))


def random_frame(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def box_seed(height: int, width: int, object_id: int, top: int, left: int,
             size: int = 12) -> np.ndarray:
    seed = np.zeros((height, width), np.int64)
    seed[top:top + size, left:left + size] = object_id
    return seed


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard index of two boolean masks (1 when both are empty)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


@functools.lru_cache(maxsize=1)
def sample_clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return the sample clip: frames (240, 427, 3) uint8, ground-truth label maps (bear: 1)."""
    frames = [read_rgb(path) for path in list_frame_files(SAMPLE / "frames")]
    truths = [read_label_map(path) for path in sorted((SAMPLE / "masks").glob("*.png"))]
    return frames, truths


class ShiftingOracle(Backend):
    """A stand-in backend that tracks perfectly a scene moving right by `shift` px per frame.

    Its identity entries are the stored masks themselves and its logits are the last frame's
    mask moved by the scene's motion, so where each id ends up is decided by the engine
    alone: slots, banks, merging, compaction, seeds. `shift` must be a multiple of 4 (the
    stride of the masks); frames should be processed at their input size.
    """

    name = "oracle"
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, max_objects: int = 10, shift: int = 4) -> None:
        self.model_config = student_config(max_objects=max_objects, pretrained_encoder=False)
        self.shift_cells = shift // 4

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        height, width = image.shape[-2:]
        tokens = torch.zeros(1, 1, height // 16, width // 16)
        return FrameFeatures(torch.zeros(1, 1, height // 4, width // 4),
                             torch.zeros(1, 1, height // 8, width // 8), tokens,
                             tokens[:, None], tokens[:, None])

    def encode_identity(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.clone()[:, None]  # (banks, 1, S+1, h4, w4)

    def segment(self, features: FrameFeatures, memory: MemoryTensors) -> torch.Tensor:
        last = memory.short_id[:, 0, 0]  # (banks, S+1, h4, w4): the last frame's mask
        return torch.log(last.roll(self.shift_cells, dims=-1).clamp(min=1e-4))

    def prepare(self, height: int, width: int) -> dict:
        return {}

    def is_prepared(self, height: int, width: int) -> bool:
        return True

    def prompt_head(self) -> None:
        return None

    def graphs_summary(self) -> None:
        return None


class SpyBackend:
    """Wraps a backend: records its calls and the logits' bank count; can fail one call.

    `fail_at = n` makes the n-th call (counting `calls`) raise the RuntimeError a CUDA
    out-of-memory error would, before it reaches the wrapped backend.
    """

    def __init__(self, backend) -> None:
        self.backend = backend
        self.calls: list[str] = []
        self.logit_banks: list[int] = []  # bank dimension of every segment call's logits
        self.fail_at: int | None = None

    def __getattr__(self, name: str):
        return getattr(self.backend, name)  # device, dtype, model_config, name

    def _call(self, method: str, *args):
        self.calls.append(method)
        if self.fail_at == len(self.calls):
            raise RuntimeError(f"CUDA out of memory (injected into {method})")
        return getattr(self.backend, method)(*args)

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        return self._call("encode", image)

    def encode_identity(self, mask: torch.Tensor) -> torch.Tensor:
        return self._call("encode_identity", mask)

    def segment(self, features: FrameFeatures, memory: MemoryTensors) -> torch.Tensor:
        logits = self._call("segment", features, memory)
        self.logit_banks.append(logits.shape[0])
        return logits
