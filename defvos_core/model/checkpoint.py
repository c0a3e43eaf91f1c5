"""Weights files: the model config travels with the state dict (fp16 for shipping)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from defvos_core.config import ModelConfig
from defvos_core.config_io import from_dict, to_dict
from defvos_core.model.vos_model import VOSModel

WEIGHTS_FORMAT = "defvos-weights-v1"
ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_STUDENT_WEIGHTS = ASSETS / "student.pt"
DEFAULT_TEACHER_WEIGHTS = ASSETS / "teacher.pt"


def file_sha256(path: str | Path) -> str:
    """Return the hex sha256 of a file's bytes (weights files are linked by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        torch.save(obj, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_weights(model: VOSModel, path: str | Path, half: bool = True,
                 meta: dict[str, Any] | None = None) -> None:
    """Write a weights-only file: model config + state dict (fp16 by default) + metadata."""
    state = {key: (value.half() if half and value.is_floating_point() else value).cpu()
             for key, value in model.state_dict().items()}
    atomic_torch_save({"format": WEIGHTS_FORMAT, "model_config": to_dict(model.config),
                       "state_dict": state, "meta": meta or {}}, path)


def resolve_weights(path: str | Path | None) -> Path:
    """`path`, or the shipped student weights when None; a clear error when missing."""
    resolved = Path(path) if path else DEFAULT_STUDENT_WEIGHTS
    if not resolved.is_file():
        hint = "" if path else " (the shipped student weights are missing from the package)"
        raise FileNotFoundError(f"weights file not found: {resolved}{hint}")
    return resolved


def read_weights(path: str | Path) -> dict[str, Any]:
    """Load and validate a weights file (no model built)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise ValueError(f"{path}: not a readable weights file ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not a defvos weights file (expected format {WEIGHTS_FORMAT})")
    return payload


def read_model_config(path: str | Path) -> ModelConfig:
    """Return the architecture a weights file records (no model built)."""
    return from_dict(ModelConfig, read_weights(path)["model_config"], f"{path}: model_config")


#: ModelConfig fields that shape no parameter: a weights file can run with other values
#: (`load_model(..., overrides=)`), e.g. to compare them by cross-validation.
INFERENCE_MODEL_FIELDS = ("sample_grid", "offset_range", "short_term_radius")


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu",
               overrides: dict[str, Any] | None = None) -> VOSModel:
    """Build the model a weights file describes and load its (float32) weights.

    overrides: new values of `INFERENCE_MODEL_FIELDS` (others are refused: they would not
    fit the weights).
    """
    payload = read_weights(resolve_weights(path))
    values = dict(payload["model_config"])
    for key, value in (overrides or {}).items():
        if key not in INFERENCE_MODEL_FIELDS:
            raise ValueError(f"model override {key!r}: only {INFERENCE_MODEL_FIELDS} can differ "
                             f"from the weights' own")
        values[key] = value
    config = from_dict(ModelConfig, values, f"{path}: model_config")
    config.pretrained_encoder = False
    model = VOSModel(config)
    state = {key: value.float() if value.is_floating_point() else value
             for key, value in payload["state_dict"].items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def weights_meta(path: str | Path | None = None) -> dict[str, Any]:
    """Return the metadata recorded with a weights file (e.g. how it was trained)."""
    return dict(read_weights(resolve_weights(path)).get("meta", {}))
