"""`OnnxBackend`: the tracker's per-frame compute on onnxruntime (CPU, CUDA or TensorRT).

The tracker and its memory manager are the same as with PyTorch; only `encode`,
`encode_identity` and `segment` run the exported graphs (torch CPU tensors in and out).

The graphs have a fixed padded size and the tracker learns the camera size at its first
frame, so graph sets are found per padded size, on the first call that needs them:
- `config.onnx.onnx_dir` given: that export folder (from `python -m defvos_core.export`) is
  loaded at construction and serves its padded size only; another size is a clear error;
- otherwise the weights are exported on first use to a cache folder
  (~/.cache/defvos/onnx/<weights sha256>-<H>x<W>-<precision>-opset<N>/, or $DEFVOS_CACHE_DIR)
  and reused by later runs. `prepare(height, width)` does it ahead of the first frame.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch

import defvos_core
from defvos_core.config import MAX_OBJECT_ID, ModelConfig, TrackerConfig
from defvos_core.config_io import to_dict
from defvos_core.inference.backend import Backend
from defvos_core.inference.preprocess import FrameGeometry
from defvos_core.model.checkpoint import file_sha256, load_model
from defvos_core.model.prompt_head import PromptHead
from defvos_core.model.prompt_weights import load_prompt_head
from defvos_core.model.propagation import MemoryTensors
from defvos_core.model.vos_model import STRIDE, FrameFeatures
from defvos_core.onnx.graphs import (
    EXPORT_FORMAT,
    MEMORY_INPUTS,
    OPSET,
    export_graphs,
    read_metadata,
)
from defvos_core.onnx.providers import (
    TENSORRT,
    create_session,
    parse_providers,
    profile_option,
    select_providers,
)

LOGGER = logging.getLogger("defvos")
ENGINE_CACHE_BESIDE_GRAPHS = "auto"  # config.onnx.trt_engine_cache: engines next to the graphs


def default_cache_dir() -> Path:
    """$DEFVOS_CACHE_DIR, else $XDG_CACHE_HOME/defvos, else ~/.cache/defvos."""
    if os.environ.get("DEFVOS_CACHE_DIR"):
        return Path(os.environ["DEFVOS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "defvos"


@dataclass
class GraphSessions:
    """The three sessions of one export folder (one padded size)."""

    folder: Path
    metadata: dict[str, Any]
    encoder: ort.InferenceSession
    identity: ort.InferenceSession
    segment: ort.InferenceSession


def _to_numpy(tensor: torch.Tensor):
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()


def _comparable(model_config: dict[str, Any]) -> dict[str, Any]:
    """Return a model config dict without the fields that do not change the graphs."""
    plain = json.loads(json.dumps(model_config))
    plain.pop("pretrained_encoder", None)
    return plain


class OnnxBackend(Backend):
    """Runs the student's exported graphs with onnxruntime (a `Backend`)."""

    name = "onnxruntime"

    def __init__(self, weights: str | Path, model_config: ModelConfig,
                 config: TrackerConfig | None = None,
                 session_options: ort.SessionOptions | None = None) -> None:
        """Serve the graphs of `weights` (its architecture: `model_config`) for `config`.

        config.onnx.providers: [] for TensorRT, CUDA, CPU (those available, in that order),
        or names / aliases ('tensorrt', 'cuda', 'cpu') that must all start.
        config.onnx.onnx_dir: a folder written by `python -m defvos_core.export` (checked
        against the weights); "" exports on first use into config.onnx.cache_dir.
        config.fp16: half-precision graphs; with onnx_dir the folder's precision applies,
        and fp16 asked of an fp32 folder is an error. `config.device` is not used: the
        providers decide where the graphs run (the tracker's tensors stay on the CPU).
        """
        config = config or TrackerConfig()
        options = config.onnx
        self.device = torch.device("cpu")  # the tracker's tensors; compute is wherever ORT runs
        self.dtype = torch.float32  # graph inputs/outputs are float32 (fp16 casts inside)
        self.model_config = model_config
        self.weights_path = Path(weights)
        self.weights_sha256 = file_sha256(self.weights_path)
        self.short_side = config.size
        self.max_long_side = config.max_long_side
        self.max_memory_frames = max(1, config.max_seed_frames + config.max_memory_frames)
        # Bound of the banks axis (TensorRT profiles): the most objects over the slots used.
        self.max_banks = math.ceil(MAX_OBJECT_ID / config.bank_slots(model_config.max_objects))
        providers = options.providers or None
        self.providers = select_providers(providers)
        self.strict_providers = parse_providers(providers) is not None  # [] = default order
        self.trt_fp16 = options.trt_fp16
        self.trt_engine_cache = options.trt_engine_cache or None
        self.cache_dir = (Path(options.cache_dir).expanduser() if options.cache_dir
                          else default_cache_dir())
        self.session_options = session_options
        self.onnx_dir = Path(options.onnx_dir) if options.onnx_dir else None
        self._graphs: dict[tuple[int, int], GraphSessions] = {}
        self._prompt_head: PromptHead | None = None
        self._prompt_head_loaded = False
        if self.onnx_dir is not None:
            metadata = read_metadata(self.onnx_dir)
            self._check_metadata(metadata, self.onnx_dir, True if config.fp16 else None)
            self.fp16 = metadata["precision"] == "fp16"
            padded = tuple(metadata["padded_size"])
            self._graphs[padded] = self._open(self.onnx_dir, metadata)
        else:
            self.fp16 = config.fp16
        if str(config.device) != "cpu":
            LOGGER.info("onnxruntime backend: device %r is not used, the providers %s decide "
                        "where the graphs run", config.device, self.providers)

    # -------------------------------------------------------------------- Backend interface
    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """Normalised padded image (1, 3, H, W) -> features and visual memory entries."""
        graphs = self._sessions((image.shape[-2], image.shape[-1]))
        outputs = graphs.encoder.run(None, {"image": _to_numpy(image)})
        return FrameFeatures(*(torch.from_numpy(output) for output in outputs))

    def encode_identity(self, mask: torch.Tensor) -> torch.Tensor:
        """Soft masks (banks, S+1, H/4, W/4) -> identity entries (banks, L, C, H/16, W/16)."""
        graphs = self._sessions((mask.shape[-2] * 4, mask.shape[-1] * 4))
        return torch.from_numpy(graphs.identity.run(None, {"mask": _to_numpy(mask)})[0])

    def segment(self, features: FrameFeatures, memory: MemoryTensors) -> torch.Tensor:
        """Features + memory -> logits (banks, S+1, H/4, W/4)."""
        graphs = self._sessions((features.skip4.shape[-2] * 4, features.skip4.shape[-1] * 4))
        feed = {"skip4": _to_numpy(features.skip4), "skip8": _to_numpy(features.skip8),
                "tokens": _to_numpy(features.tokens)}
        feed.update({name: _to_numpy(tensor) for name, tensor in zip(MEMORY_INPUTS, memory)})
        return torch.from_numpy(graphs.segment.run(None, feed)[0])

    def prompt_head(self) -> PromptHead | None:
        """Return the head loaded from the weights file on first use (torch, CPU), or None."""
        if not self._prompt_head_loaded:
            self._prompt_head = load_prompt_head(self.weights_path)
            self._prompt_head_loaded = True
        return self._prompt_head

    def graphs_summary(self) -> str | None:
        """Return None: onnxruntime's graphs are not CUDA graphs captured by defvos."""
        return None

    # ------------------------------------------------------------------------ graph sets
    def prepare(self, height: int, width: int) -> dict[str, Any]:
        """Load or export the graphs for camera frames of `height` x `width`; their metadata."""
        geometry = FrameGeometry.for_input(height, width, self.short_side,
                                           self.max_long_side)
        return self._sessions(geometry.padded).metadata

    def is_prepared(self, height: int, width: int) -> bool:
        """Whether the graphs for camera frames of `height` x `width` are loaded."""
        geometry = FrameGeometry.for_input(height, width, self.short_side,
                                           self.max_long_side)
        return tuple(geometry.padded) in self._graphs

    def _sessions(self, padded: tuple[int, int]) -> GraphSessions:
        padded = (int(padded[0]), int(padded[1]))
        graphs = self._graphs.get(padded)
        if graphs is not None:
            return graphs
        if self.onnx_dir is not None:
            (have,) = self._graphs
            raise ValueError(
                f"the ONNX graphs in {self.onnx_dir} are for padded size {have[0]}x{have[1]}, "
                f"but this stream's frames are padded to {padded[0]}x{padded[1]}: export for "
                "this camera size (python -m defvos_core.export --size HxW) or leave onnx_dir "
                "unset to export automatically")
        if padded[0] % STRIDE or padded[1] % STRIDE:
            raise ValueError(f"input size {padded[0]}x{padded[1]} is not padded to a multiple "
                             f"of {STRIDE}")
        folder = self._cache_folder(padded)
        metadata = self._cached_metadata(folder, padded)
        if metadata is None:
            metadata = self._export(folder, padded)
        graphs = self._open(folder, metadata)
        self._graphs[padded] = graphs
        return graphs

    def _cache_folder(self, padded: tuple[int, int]) -> Path:
        precision = "fp16" if self.fp16 else "fp32"
        return (self.cache_dir / "onnx" /
                f"{self.weights_sha256[:16]}-{padded[0]}x{padded[1]}-{precision}-opset{OPSET}")

    def _cached_metadata(self, folder: Path, padded: tuple[int, int]) -> dict[str, Any] | None:
        """Return the metadata of a usable cached export, or None (absent, stale or broken)."""
        try:
            metadata = read_metadata(folder)
            self._check_metadata(metadata, folder, self.fp16)
        except (OSError, ValueError, KeyError) as error:
            if folder.exists():
                LOGGER.info("onnxruntime backend: re-exporting %s (%s)", folder, error)
            return None
        if (tuple(metadata["padded_size"]) != padded
                or metadata["versions"].get("defvos") != defvos_core.__version__):
            return None
        return metadata

    def _export(self, folder: Path, padded: tuple[int, int]) -> dict[str, Any]:
        precision = "fp16" if self.fp16 else "fp32"
        LOGGER.info("onnxruntime backend: exporting %s (%s) to ONNX for padded size %dx%d "
                    "into %s (once per size; later runs reuse it)", self.weights_path.name,
                    precision, padded[0], padded[1], folder)
        started = time.perf_counter()
        model = load_model(self.weights_path)
        metadata = export_graphs(model, folder, padded, fp16=self.fp16,
                                 short_side=self.short_side, weights_path=self.weights_path)
        LOGGER.info("onnxruntime backend: export took %.1f s", time.perf_counter() - started)
        return metadata

    def _check_metadata(self, metadata: dict[str, Any], folder: Path,
                        fp16: bool | None) -> None:
        """Errors when an export folder does not belong to these weights and settings."""
        if metadata.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{folder}: export format {metadata.get('format')!r}, expected "
                             f"{EXPORT_FORMAT!r}; re-export")
        if _comparable(metadata["model_config"]) != _comparable(to_dict(self.model_config)):
            raise ValueError(f"{folder}: the graphs' model config does not match the weights "
                             f"{self.weights_path} ({metadata['model_config']} vs "
                             f"{to_dict(self.model_config)}); re-export them from these weights")
        recorded = (metadata.get("weights") or {}).get("sha256")
        if recorded and recorded != self.weights_sha256:
            raise ValueError(f"{folder}: the graphs were exported from other weights "
                             f"({metadata['weights'].get('file')}, sha256 {recorded[:12]}...) "
                             f"than {self.weights_path} (sha256 {self.weights_sha256[:12]}...); "
                             "re-export them from these weights")
        if metadata.get("short_side") != self.short_side:
            raise ValueError(f"{folder}: the graphs were exported for processing short side "
                             f"{metadata.get('short_side')}, the tracker uses {self.short_side}")
        if fp16 is not None and (metadata.get("precision") == "fp16") != bool(fp16):
            raise ValueError(f"{folder}: the graphs are {metadata.get('precision')}, but "
                             f"{'fp16' if fp16 else 'fp32'} was asked for")

    def _trt_profiles(self, metadata: dict[str, Any]) -> dict[str, dict[str, str]]:
        """Return TensorRT shape profiles of the dynamic inputs: T and banks in [1, max]."""
        io = metadata["io"]
        frames, banks = self.max_memory_frames, self.max_banks
        profiles = {}
        for graph in ("identity", "segment"):
            inputs = io[graph]["inputs"]
            ranges = {}
            for name, shape in inputs.items():
                if all(isinstance(dim, int) for dim in shape):
                    continue
                low = [1 if isinstance(dim, str) else dim for dim in shape]
                opt = [frames if dim == "memory_frames" else 1 if isinstance(dim, str) else dim
                       for dim in shape]
                high = [frames if dim == "memory_frames" else banks if dim == "banks" else dim
                        for dim in shape]
                ranges[name] = (low, opt, high)
            profiles[graph] = {
                "trt_profile_min_shapes": profile_option({k: v[0] for k, v in ranges.items()}),
                "trt_profile_opt_shapes": profile_option({k: v[1] for k, v in ranges.items()}),
                "trt_profile_max_shapes": profile_option({k: v[2] for k, v in ranges.items()}),
            }
        return profiles

    def _open(self, folder: Path, metadata: dict[str, Any]) -> GraphSessions:
        engine_cache = self.trt_engine_cache
        if engine_cache == ENGINE_CACHE_BESIDE_GRAPHS:
            engine_cache = folder / "trt_engines"
        profiles = self._trt_profiles(metadata) if TENSORRT in self.providers else {}
        sessions = {}
        for name in ("encoder", "identity", "segment"):
            sessions[name] = create_session(
                folder / metadata["graphs"][name], self.providers, self.strict_providers,
                trt_fp16=self.trt_fp16, trt_engine_cache=engine_cache or None,
                trt_profiles=profiles.get(name), session_options=self.session_options)
            if not self.strict_providers:  # do not retry providers that could not start
                in_use = sessions[name].get_providers()
                self.providers = [p for p in self.providers if p in in_use] or self.providers
        return GraphSessions(folder, metadata, **sessions)
