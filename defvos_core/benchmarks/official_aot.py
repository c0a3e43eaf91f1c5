"""The official AOT / DeAOT inference engines (yoxu515/aot-benchmark) as a timing peer.

Benchmark only: the `deaotpy` wheel (module `aot`, BSD-3) is never a dependency of defvos
and nothing of it is copied here. Install it beside defvos without its declared needs
(torchvision, the compiled `spatial_correlation_sampler`), which timing does not use::

    pip install --no-deps deaotpy==1.11.0

Models come from the official configs (`aot.configs.models.deaott` / `aott`) with their own
random initialisation (speed does not depend on the weights) and are driven per frame as
the official evaluator (`aot.networks.managers.evaluator`) drives them: propagate, decode
at the input size, softmax, argmax, update the memory with the label map; a long-term
memory frame every `long_term_gap` frames, never dropped. fp16 is the evaluator's `--amp`
path (autocast).

Without `spatial_correlation_sampler` (a CUDA extension with no wheel) the short-term
attention runs the pure-PyTorch branch the official code keeps for that case
(`enable_corr=False`: unfold + product). DeAOT's layer picks it by itself. AOT's block would
pick `MultiheadLocalAttentionV3`, whose output is not permuted back (a shape error), so while
an AOT model is built the name `MultiheadLocalAttentionV3` in `aot.networks.layers.transformer`
points to `MultiheadLocalAttentionV2` with `enable_corr=False`: the class the compiled path
uses, minus the correlation kernel. That is the only change, at run time, in this benchmark.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
from typing import Iterator

import numpy as np
import torch

PEERS = {"DeAOT-T": "deaott", "AOT-T": "aott"}  # engine name -> official model config
IMAGE_MEAN = (0.485, 0.456, 0.406)  # the official evaluator's input normalisation
IMAGE_STD = (0.229, 0.224, 0.225)
ALIGN_STRIDE = 16


def peer_unavailable() -> str | None:
    """Return why the official engines cannot run here, or None when they can."""
    if importlib.util.find_spec("aot") is None:
        return "module 'aot' not found: pip install --no-deps deaotpy==1.11.0"
    return None


def short_term_path() -> str:
    """Which short-term attention the official models run here."""
    if importlib.util.find_spec("spatial_correlation_sampler") is not None:
        return "compiled spatial_correlation_sampler"
    return "pure PyTorch (enable_corr=False: unfold + product; no spatial_correlation_sampler)"


def aligned_size(height: int, width: int) -> tuple[int, int]:
    """Return the official evaluator's size for an image: each side to the nearest 16k + 1."""
    def align(side: int) -> int:
        if (side - 1) % ALIGN_STRIDE == 0:
            return side
        return int(np.around((side - 1) / ALIGN_STRIDE) * ALIGN_STRIDE + 1)
    return align(height), align(width)


@contextlib.contextmanager
def _local_attention_fallback() -> Iterator[None]:
    """While building a model, route AOT's broken V3 fallback to V2 without the extension."""
    if importlib.util.find_spec("spatial_correlation_sampler") is not None:
        yield
        return
    from aot.networks.layers import attention, transformer

    original = transformer.MultiheadLocalAttentionV3
    transformer.MultiheadLocalAttentionV3 = functools.partial(
        attention.MultiheadLocalAttentionV2, enable_corr=False)
    try:
        yield
    finally:
        transformer.MultiheadLocalAttentionV3 = original


class OfficialEngine:
    """One stream through the official inference engine of `name` ('DeAOT-T' or 'AOT-T')."""

    def __init__(self, name: str, device: str = "cpu", fp16: bool = False,
                 long_term_gap: int = 5, seed: int = 0) -> None:
        if name not in PEERS:
            raise ValueError(f"unknown official engine {name!r}: expected one of {list(PEERS)}")
        if fp16 and not device.startswith("cuda"):
            raise ValueError("fp16 (autocast) needs a CUDA device")
        from aot.configs.default import DefaultEngineConfig
        from aot.networks.engines import build_engine
        from aot.networks.models import build_vos_model

        self.name = name
        self.device = torch.device(device)
        self.fp16 = fp16
        config = DefaultEngineConfig("bench", PEERS[name])
        torch.manual_seed(seed)
        # quiet: the official code prints a hint to install the correlation extension
        with _local_attention_fallback(), contextlib.redirect_stdout(io.StringIO()):
            model = build_vos_model(config.MODEL_VOS, config).to(self.device).eval()
        self.parameters = sum(p.numel() for p in model.parameters())
        self.engine = build_engine(config.MODEL_ENGINE, phase="eval", aot_model=model,
                                   long_term_mem_gap=long_term_gap, short_term_mem_skip=1)
        self.mean = torch.tensor(IMAGE_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGE_STD, device=self.device).view(1, 3, 1, 1)
        self.size: tuple[int, int] | None = None

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16)

    def _image(self, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB at `aligned_size` -> normalised (1, 3, H, W) on the device."""
        image = torch.from_numpy(frame).to(self.device).permute(2, 0, 1)[None].float() / 255
        return (image - self.mean) / self.std

    @torch.no_grad()
    def add_objects(self, frame: np.ndarray, labels: np.ndarray) -> None:
        """Start the stream: `labels` (H, W) holds objects 1..K (the evaluator's convention)."""
        if frame.shape[:2] != aligned_size(*frame.shape[:2]):
            raise ValueError(f"{self.name} takes 16k+1-sized frames "
                             f"({aligned_size(*frame.shape[:2])}), got {frame.shape[:2]}")
        self.engine.restart_engine()
        self.size = frame.shape[:2]
        mask = torch.from_numpy(labels.astype(np.float32)).to(self.device)[None, None]
        with self._autocast():
            self.engine.add_reference_frame(self._image(frame), mask, frame_step=0,
                                            obj_nums=[int(labels.max())])

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> np.ndarray:
        """Segment the next frame; returns its (H, W) uint8 label map on the host."""
        with self._autocast():
            self.engine.match_propogate_one_frame(self._image(frame))
            logits = self.engine.decode_current_logits(self.size)
            labels = torch.argmax(torch.softmax(logits, dim=1), dim=1, keepdim=True).float()
            self.engine.update_memory(labels)
        return labels[0, 0].to(torch.uint8).cpu().numpy()

    def memory_frames(self) -> int:
        """Frames in the long-term memory (the reference frame included)."""
        engine = self.engine.aot_engines[0]
        return engine.long_term_memories[0][0].shape[0] // engine.enc_hw

    def memory_bytes(self) -> int:
        """Bytes of the long- and short-term memory tensors (each storage once)."""
        storages = {}
        for engine in self.engine.aot_engines:
            for layer in list(engine.long_term_memories) + list(engine.short_term_memories):
                for tensor in layer:
                    if tensor is not None:
                        storage = tensor.untyped_storage()
                        storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())
