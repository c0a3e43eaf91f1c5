"""The prompt head in a weights file: add a trained head to a copy of a student, load it alone.

A weights file with a head records `model_config.prompt_head = True`, the head's tensors as
`prompt_head.*` in its state dict, and `meta["prompt_head"]` (how the head was trained, the
sha256 of the parent file). Everything else (tensors, metadata) is the parent's, unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from defvos_core.config import ModelConfig
from defvos_core.config_io import from_dict, to_dict
from defvos_core.model.checkpoint import (WEIGHTS_FORMAT, atomic_torch_save, file_sha256,
                                          read_weights)
from defvos_core.model.encoder import EfficientNetLiteEncoder
from defvos_core.model.prompt_head import PromptHead
from defvos_core.model.vos_model import VOSModel

PREFIX = "prompt_head."


def new_prompt_head(config: ModelConfig) -> PromptHead:
    """Return an untrained head sized for the encoder and embedding width of `config`."""
    channels4, channels8, _ = EfficientNetLiteEncoder(config.encoder,
                                                      pretrained=False).feature_channels
    return PromptHead((channels4, channels8, config.embed_dim))


def load_student(path: str | Path) -> VOSModel:
    """Return the (float32, CPU, eval) model of a weights file without its prompt head.

    A head of another version (other prompt channels) does not stop the student loading.
    """
    payload = read_weights(path)
    config = from_dict(ModelConfig, payload["model_config"], f"{path}: model_config")
    config.pretrained_encoder, config.prompt_head = False, False
    model = VOSModel(config)
    state = {key: value.float() if value.is_floating_point() else value
             for key, value in payload["state_dict"].items() if not key.startswith(PREFIX)}
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_prompt_head(path: str | Path) -> PromptHead | None:
    """Return the (float32, CPU, eval) head of a weights file; None when it has none."""
    payload = read_weights(path)
    config = from_dict(ModelConfig, payload["model_config"], f"{path}: model_config")
    if not config.prompt_head:
        return None
    head = new_prompt_head(config)
    state = {key[len(PREFIX):]: value.float() for key, value in payload["state_dict"].items()
             if key.startswith(PREFIX)}
    head.load_state_dict(state, strict=True)
    return head.eval()


def add_prompt_head(parent: str | Path, head: PromptHead, out: str | Path,
                    meta: dict[str, Any]) -> None:
    """Write `out`: the weights of `parent` plus `head` (fp16 like the parent's floats).

    meta: how the head was trained; recorded as meta["prompt_head"] with the parent's path
    and sha256 added. A parent that already has a head gets this one instead.
    """
    payload = read_weights(parent)
    config = from_dict(ModelConfig, payload["model_config"], f"{parent}: model_config")
    config.prompt_head = True
    half = any(value.dtype == torch.float16 for value in payload["state_dict"].values())
    state = {key: value for key, value in payload["state_dict"].items()
             if not key.startswith(PREFIX)}
    for key, value in head.state_dict().items():
        value = value.detach().cpu()
        state[PREFIX + key] = value.half() if half and value.is_floating_point() else value
    parent_meta = dict(payload.get("meta", {}))
    previous = parent_meta.pop("prompt_head", None)
    record = dict(meta, parent_weights=Path(parent).name, parent_sha256=file_sha256(parent))
    if previous is not None:
        # The student the head is added to is the parent's own parent.
        record["parent_sha256"] = previous["parent_sha256"]
        record["parent_weights"] = previous["parent_weights"]
    atomic_torch_save({"format": WEIGHTS_FORMAT, "model_config": to_dict(config),
                       "state_dict": state, "meta": dict(parent_meta, prompt_head=record)}, out)


def copy_prompt_head(source: str | Path, parent: str | Path, out: str | Path) -> None:
    """Write `out` = `parent` + the head of `source`, with the head's recorded training."""
    head = load_prompt_head(source)
    if head is None:
        raise ValueError(f"{source}: has no prompt head to copy")
    meta = dict(read_weights(source)["meta"]["prompt_head"])
    for key in ("parent_weights", "parent_sha256"):
        meta.pop(key, None)
    add_prompt_head(parent, head, out, meta)
