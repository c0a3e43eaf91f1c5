"""The model's three per-frame computations as ONNX graphs, with the temporal memory explicit.

    encoder.onnx   image (1, 3, H, W)            -> skip4, skip8, tokens, key, value
    identity.onnx  mask (banks, S+1, H/4, W/4)   -> identity (banks, L, C, H/16, W/16)
    segment.onnx   skip4, skip8, tokens + the six memory tensors -> logits (banks, S+1, H/4, W/4)

H x W is the padded processing size (`FrameGeometry.padded`) and is fixed per export: TensorRT
builds one engine per input shape anyway, and fixed sizes let the exporter fold the sampling
grids and window masks into constants. The number of memory frames T ("memory_frames") and of
identity banks ("banks") are dynamic axes. Inputs and outputs are float32 in every export; an
fp16 export casts to half inside the graph, so the tracker and its memory are unchanged.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn
from torch.onnx import symbolic_helper

import defvos_core
from defvos_core.config_io import to_dict
from defvos_core.model.checkpoint import file_sha256
from defvos_core.model.propagation import MemoryTensors
from defvos_core.model.vos_model import STRIDE, FrameFeatures, VOSModel

OPSET = 17  # GridSample needs >= 16; LayerNormalization is native from 17
EXPORT_FORMAT = "defvos-onnx-v1"
METADATA_FILE = "metadata.json"
GRAPH_FILES = {"encoder": "encoder.onnx", "identity": "identity.onnx",
               "segment": "segment.onnx"}
ENCODER_INPUTS = ("image",)
ENCODER_OUTPUTS = ("skip4", "skip8", "tokens", "key", "value")
IDENTITY_INPUTS = ("mask",)
IDENTITY_OUTPUTS = ("identity",)
MEMORY_INPUTS = ("long_key", "long_value", "long_id", "short_key", "short_value", "short_id")
SEGMENT_INPUTS = ("skip4", "skip8", "tokens") + MEMORY_INPUTS
SEGMENT_OUTPUTS = ("logits",)
FRAMES_AXIS = "memory_frames"
BANKS_AXIS = "banks"
DYNAMIC_AXES = {
    "identity": {"mask": {0: BANKS_AXIS}, "identity": {0: BANKS_AXIS}},
    "segment": {"long_key": {1: FRAMES_AXIS}, "long_value": {1: FRAMES_AXIS},
                "long_id": {0: BANKS_AXIS, 1: FRAMES_AXIS}, "short_id": {0: BANKS_AXIS},
                "logits": {0: BANKS_AXIS}},
}


class EncoderGraph(nn.Module):
    """image (1, 3, H, W) -> skip4, skip8, tokens, key (1, L, C, h, w), value (1, L, C, h, w)."""

    def __init__(self, model: VOSModel, half: bool = False) -> None:
        super().__init__()
        self.model, self.half = model, half

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.encode(image.half() if self.half else image)
        return tuple(t.float() for t in features)


class IdentityGraph(nn.Module):
    """Soft mask at stride 4 (banks, S+1, H/4, W/4) -> identity entries (banks, L, C, h, w)."""

    def __init__(self, model: VOSModel, half: bool = False) -> None:
        super().__init__()
        self.model, self.half = model, half

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_identity(mask.half() if self.half else mask).float()


class SegmentGraph(nn.Module):
    """Propagation + decoder: current features and memory tensors -> logits (banks, S+1, h4, w4)."""

    def __init__(self, model: VOSModel, half: bool = False) -> None:
        super().__init__()
        self.model, self.half = model, half

    def forward(self, skip4: torch.Tensor, skip8: torch.Tensor, tokens: torch.Tensor,
                long_key: torch.Tensor, long_value: torch.Tensor, long_id: torch.Tensor,
                short_key: torch.Tensor, short_value: torch.Tensor,
                short_id: torch.Tensor) -> torch.Tensor:
        inputs = (skip4, skip8, tokens, long_key, long_value, long_id, short_key, short_value,
                  short_id)
        if self.half:
            inputs = tuple(t.half() for t in inputs)
        features = FrameFeatures(inputs[0], inputs[1], inputs[2], None, None)
        logits = self.model.segment(features, MemoryTensors(*inputs[3:])).logits
        return logits.float()


def check_padded_size(padded_size: tuple[int, int]) -> tuple[int, int]:
    """Validate an (H, W) padded processing size (positive multiples of the model stride)."""
    height, width = (int(side) for side in padded_size)
    if height <= 0 or width <= 0 or height % STRIDE or width % STRIDE:
        raise ValueError(f"padded size {height}x{width} must be positive multiples of {STRIDE}")
    return height, width


def example_inputs(model: VOSModel, padded_size: tuple[int, int], frames: int = 2,
                   banks: int = 2) -> dict[str, tuple[torch.Tensor, ...]]:
    """Random float32 inputs of each graph (T and banks > 1 so no dynamic axis is traced as 1)."""
    generator = torch.Generator().manual_seed(0)
    config = model.config
    height, width = padded_size
    h4, w4, h, w = height // 4, width // 4, height // STRIDE, width // STRIDE
    layers, dim = config.num_layers, config.embed_dim
    channels4, channels8, _ = model.encoder.feature_channels

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    mask = torch.softmax(rand(banks, config.num_slots, h4, w4), dim=1)
    return {
        "encoder": (rand(1, 3, height, width),),
        "identity": (mask,),
        "segment": (rand(1, channels4, h4, w4), rand(1, channels8, height // 8, width // 8),
                    rand(1, dim, h, w),
                    rand(1, frames, layers, dim, h, w), rand(1, frames, layers, dim, h, w),
                    rand(banks, frames, layers, dim, h, w),
                    rand(1, 1, layers, dim, h, w), rand(1, 1, layers, dim, h, w),
                    rand(banks, 1, layers, dim, h, w)),
    }


@symbolic_helper.parse_args("v", "is", "is", "is", "is")
def _im2col_as_slices(g, image, kernel_size, dilation, padding, stride):
    """aten::im2col (F.unfold) as Pad + one strided Slice per kernel offset + Concat.

    The exporter's own im2col is two Gathers and a 6-D Transpose, which dominates the
    segment graph on onnxruntime CPU. This is the same data movement (exact), in the same
    output layout (B, C*kh*kw, L) with channel-major (c, i, j) rows; it needs the spatial
    size to be static, which the fixed-size graphs guarantee.
    """
    sizes = symbolic_helper._get_tensor_sizes(image)
    if sizes is None or len(sizes) != 4 or sizes[2] is None or sizes[3] is None:
        raise RuntimeError("im2col export needs a static spatial size")
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel_size, dilation, padding, stride
    out_h = (sizes[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (sizes[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def const(values: list[int]):
        return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

    padded = g.op("Pad", image, const([0, 0, ph, pw, 0, 0, ph, pw]), mode_s="constant")
    axes, steps, unsqueeze_at = const([2, 3]), const([sh, sw]), const([2])
    windows = []
    for i in range(kh):
        for j in range(kw):
            start = [i * dh, j * dw]
            end = [start[0] + (out_h - 1) * sh + 1, start[1] + (out_w - 1) * sw + 1]
            window = g.op("Slice", padded, const(start), const(end), axes, steps)
            windows.append(g.op("Unsqueeze", window, unsqueeze_at))  # (B, C, 1, oh, ow)
    stacked = g.op("Concat", *windows, axis_i=2)  # (B, C, kh*kw, oh, ow)
    return g.op("Reshape", stacked, const([0, -1, out_h * out_w]))


def _export_one(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path,
                input_names: tuple[str, ...], output_names: tuple[str, ...],
                dynamic_axes: dict | None, opset: int) -> None:
    torch.onnx.register_custom_op_symbolic("aten::im2col", _im2col_as_slices, opset)
    try:
        with warnings.catch_warnings():
            # The tracer's notes on constant sampling grids / scales are expected here.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(module, inputs, str(path), input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::im2col", opset)
    _declare_output_shapes(path, module(*inputs), dynamic_axes or {})


def _declare_output_shapes(path: Path, outputs: torch.Tensor | tuple[torch.Tensor, ...],
                           dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Declare the outputs' fixed sizes (the tracer leaves sizes computed from shapes symbolic)."""
    outputs = (outputs,) if isinstance(outputs, torch.Tensor) else outputs
    model = onnx.load(str(path))
    for value, tensor in zip(model.graph.output, outputs):
        axes = dynamic_axes.get(value.name, {})
        dims = value.type.tensor_type.shape.dim
        for index, size in enumerate(tensor.shape):
            if index in axes:
                dims[index].dim_param = axes[index]
            else:
                dims[index].dim_value = int(size)
    onnx.save(model, str(path))


def _io_description(model: onnx.ModelProto) -> dict[str, dict[str, list]]:
    """Inputs/outputs with shapes: ints for fixed axes, names for dynamic ones."""
    def shape(value: onnx.ValueInfoProto) -> list:
        return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]

    initializers = {init.name for init in model.graph.initializer}
    return {"inputs": {v.name: shape(v) for v in model.graph.input if v.name not in initializers},
            "outputs": {v.name: shape(v) for v in model.graph.output}}


def check_graph(path: str | Path) -> onnx.ModelProto:
    """onnx.checker (full) + strict shape inference; returns the inferred model."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def export_graphs(model: VOSModel, out_dir: str | Path, padded_size: tuple[int, int], *,
                  fp16: bool = False, input_size: tuple[int, int] | None = None,
                  resized_size: tuple[int, int] | None = None, short_side: int | None = None,
                  weights_path: str | Path | None = None, opset: int = OPSET,
                  check: bool = True) -> dict[str, Any]:
    """Write encoder/identity/segment graphs and metadata.json into `out_dir`; returns metadata.

    The files are written to a temporary folder beside `out_dir` and moved in at the end, so
    an interrupted export never leaves a half-written graph set. `model` is not modified.
    """
    if opset < 16:
        raise ValueError(f"opset {opset} is too old: GridSample needs opset >= 16")
    padded_size = check_padded_size(padded_size)
    config = model.config
    export_model = copy.deepcopy(model).to("cpu", torch.float16 if fp16 else torch.float32)
    export_model.eval()
    graphs = {"encoder": EncoderGraph(export_model, fp16),
              "identity": IdentityGraph(export_model, fp16),
              "segment": SegmentGraph(export_model, fp16)}
    names = {"encoder": (ENCODER_INPUTS, ENCODER_OUTPUTS),
             "identity": (IDENTITY_INPUTS, IDENTITY_OUTPUTS),
             "segment": (SEGMENT_INPUTS, SEGMENT_OUTPUTS)}
    inputs = example_inputs(model, padded_size)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        io = {}
        with torch.no_grad():
            for name, module in graphs.items():
                path = staging / GRAPH_FILES[name]
                _export_one(module.eval(), inputs[name], path, *names[name],
                            DYNAMIC_AXES.get(name), opset)
                io[name] = _io_description(check_graph(path) if check else onnx.load(str(path)))
        metadata = {
            "format": EXPORT_FORMAT,
            "graphs": dict(GRAPH_FILES),
            "input_size": list(input_size) if input_size else None,
            "resized_size": list(resized_size) if resized_size else None,
            "padded_size": list(padded_size),
            "short_side": short_side,
            "stride": STRIDE,
            "id_slots": config.max_objects,
            "num_slots": config.num_slots,
            "num_layers": config.num_layers,
            "embed_dim": config.embed_dim,
            "precision": "fp16" if fp16 else "fp32",
            "io_dtype": "float32",
            "dynamic_axes": {graph: {tensor: {str(axis): label for axis, label in axes.items()}
                                     for tensor, axes in tensors.items()}
                             for graph, tensors in DYNAMIC_AXES.items()},
            "io": io,
            "model_config": to_dict(config),
            "weights": ({"file": Path(weights_path).name, "sha256": file_sha256(weights_path)}
                        if weights_path else None),
            "opset": opset,
            "versions": {"defvos": defvos_core.__version__, "torch": torch.__version__,
                         "onnx": onnx.__version__, "opset": opset},
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        for path in staging.iterdir():
            os.chmod(path, 0o644)
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in staging.iterdir():
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata


def read_metadata(graph_dir: str | Path) -> dict[str, Any]:
    """metadata.json of an export folder, validated (clear errors for missing files)."""
    graph_dir = Path(graph_dir)
    path = graph_dir / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {graph_dir} is not a defvos ONNX export "
                                "(create one with python -m defvos_core.export)")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if metadata.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: format {metadata.get('format')!r}, expected {EXPORT_FORMAT!r}")
    for name, file in metadata["graphs"].items():
        if not (graph_dir / file).is_file():
            raise FileNotFoundError(f"{graph_dir / file} ({name} graph) is missing")
    return metadata
