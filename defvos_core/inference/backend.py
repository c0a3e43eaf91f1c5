"""Per-frame compute of the tracker, swappable between PyTorch and onnxruntime.

A backend runs the model's three per-frame computations; the tracker keeps all state.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import torch

from defvos_core.config import ModelConfig
from defvos_core.inference.cuda_graphs import GraphedModel
from defvos_core.model.prompt_head import PromptHead
from defvos_core.model.propagation import MemoryTensors
from defvos_core.model.vos_model import FrameFeatures, VOSModel


class Backend(ABC):
    """What the tracker, the prompt seeder and the node need from a compute backend.

    A subclass that leaves any method below unimplemented cannot be constructed.
    """

    device: torch.device  # where the tracker keeps its tensors
    dtype: torch.dtype  # the dtype of the tensors passed in and out
    model_config: ModelConfig  # the architecture of the weights
    name: str  # "torch", "onnxruntime", ...

    @abstractmethod
    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """Normalised padded image (1, 3, H, W) -> features and visual memory entries."""

    @abstractmethod
    def encode_identity(self, mask: torch.Tensor) -> torch.Tensor:
        """Soft masks (banks, S+1, H/4, W/4) -> identity entries (banks, L, C, H/16, W/16)."""

    @abstractmethod
    def segment(self, features: FrameFeatures, memory: MemoryTensors) -> torch.Tensor:
        """Features + memory -> logits (banks, S+1, H/4, W/4)."""

    @abstractmethod
    def prepare(self, height: int, width: int) -> dict[str, Any]:
        """Get ready for camera frames of `height` x `width` (e.g. load or export graphs).

        Returns what was prepared (graph metadata; {} where nothing depends on the size).
        """

    @abstractmethod
    def is_prepared(self, height: int, width: int) -> bool:
        """Whether frames of `height` x `width` run now, without a slow `prepare` first."""

    @abstractmethod
    def prompt_head(self) -> PromptHead | None:
        """Return the box / click head of these weights (a torch module); None if they lack one."""

    @abstractmethod
    def graphs_summary(self) -> str | None:
        """Return what captured CUDA graphs served so far; None when none are used."""


class TorchBackend(Backend):
    """Runs a `VOSModel` with PyTorch (CPU or CUDA; optional fp16 on CUDA, bf16 anywhere)."""

    name = "torch"

    def __init__(self, model: VOSModel, device: str | torch.device = "cpu",
                 fp16: bool = False, cuda_graphs: bool = False, bf16: bool = False) -> None:
        """Wrap a private, inference-ready copy of `model`.

        cuda_graphs: replay the per-frame calls as CUDA graphs once their shapes are static
        (`defvos_core.inference.cuda_graphs`); ignored on a CPU.
        """
        self.device = torch.device(device)
        if fp16 and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device")
        if fp16 and bf16:
            raise ValueError("fp16 and bf16 are exclusive: choose one precision")
        self.dtype = torch.float16 if fp16 else torch.bfloat16 if bf16 else torch.float32
        # A private copy with BatchNorm folded into the encoder's convs: same outputs, fewer ops.
        model = copy.deepcopy(model).eval()
        model.encoder.fuse_batchnorm()
        if self.device.type == "cpu":
            # oneDNN's convolutions run ~20 % faster on NHWC weights (measured at 240p).
            model.encoder.to(memory_format=torch.channels_last)
            model.decoder.to(memory_format=torch.channels_last)
        self.model = model.to(self.device, self.dtype)
        self.model_config = model.config
        self.graphs: GraphedModel | None = None
        if cuda_graphs and self.device.type == "cuda":
            self.graphs = GraphedModel(self.model, capture=True)

    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> FrameFeatures:
        if self.graphs is not None:
            return self.graphs.encode(image)
        return self.model.encode(image)

    @torch.inference_mode()
    def encode_identity(self, mask: torch.Tensor) -> torch.Tensor:
        if self.graphs is not None:
            return self.graphs.encode_identity(mask.to(self.dtype))
        return self.model.encode_identity(mask.to(self.dtype))

    @torch.inference_mode()
    def segment(self, features: FrameFeatures, memory: MemoryTensors) -> torch.Tensor:
        if self.graphs is not None:
            return self.graphs.segment(features, memory)
        return self.model.segment(features, memory).logits

    def prepare(self, height: int, width: int) -> dict[str, Any]:
        """Nothing to do: PyTorch runs any frame size."""
        return {}

    def is_prepared(self, height: int, width: int) -> bool:
        """Return True: PyTorch runs any frame size."""
        return True

    def prompt_head(self) -> PromptHead | None:
        """Return the head inside the model (its device and dtype), or None."""
        return self.model.prompt_head

    def graphs_summary(self) -> str | None:
        """Return what the CUDA graphs served, or None without them."""
        return self.graphs.summary() if self.graphs is not None else None
