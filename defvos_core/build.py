"""The one place that turns (weights, TrackerConfig) into a ready backend and tracker.

    tracker = build_tracker()                                   # shipped student, torch, CPU
    tracker = build_tracker("w.pt", TrackerConfig(backend="onnxruntime", size=360))

The weights file is resolved here (None: the shipped student) and nowhere else; the tracker
only knows the `Backend` protocol, so adding a runtime means adding a branch here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defvos_core.config import TrackerConfig
from defvos_core.inference.backend import Backend, TorchBackend
from defvos_core.inference.native_memory import bound_kernel_cache
from defvos_core.inference.tracker import Tracker
from defvos_core.model.checkpoint import load_model, read_model_config, resolve_weights


def build_backend(weights: str | Path | None = None, config: TrackerConfig | None = None,
                  model_overrides: dict[str, Any] | None = None,
                  **runtime_objects: Any) -> Backend:
    """Return the backend `config.backend` names, over `weights` (None: the shipped student).

    model_overrides: other values of the weights' parameter-free model settings
    (`load_model`; torch backend). runtime_objects: objects that are not settings, passed to
    the backend as they are (onnxruntime: `session_options`). Raises FileNotFoundError /
    ValueError naming the weights file or the setting at fault.
    """
    config = config or TrackerConfig()
    bound_kernel_cache()  # before the first CPU kernel is compiled (native_memory)
    path = resolve_weights(weights)
    if model_overrides and config.backend != "torch":
        raise ValueError("model overrides run with the torch backend only")
    if config.backend == "torch":
        if runtime_objects:
            raise ValueError(f"the torch backend takes no {sorted(runtime_objects)}")
        return TorchBackend(load_model(path, overrides=model_overrides), config.device,
                            config.fp16, config.cuda_graphs, config.bf16)
    if config.backend == "onnxruntime":
        from defvos_core.onnx.runtime import OnnxBackend

        return OnnxBackend(path, read_model_config(path), config, **runtime_objects)
    raise ValueError(f"unknown backend {config.backend!r}")  # TrackerConfig checks it too


def build_tracker(weights: str | Path | None = None, config: TrackerConfig | None = None,
                  model_overrides: dict[str, Any] | None = None,
                  **runtime_objects: Any) -> Tracker:
    """Return a ready tracker: `build_backend(weights, config, ...)` + its bounded memory."""
    config = config or TrackerConfig()
    return Tracker(build_backend(weights, config, model_overrides, **runtime_objects), config)
