"""Training data of the prompt head: cached frozen-encoder features, prompts drawn per step.

The student's encoder is frozen, so each image is encoded once (at the tracker's processing
size) and its features are cached on disk; a training step crops aligned windows of the
cached features, picks one object of the crop and draws a jittered box or clicks from it.

With `composites`, every image also appears a second time with another training photo's
object pasted over it (`compose_pair`; their boxes overlap 3 times in 4): two objects per
image, so the head must follow its prompt rather than segment the most salient thing.

ECSSD split (fixed): every fifth image (0005, 0010, ..., 1000; 200 images) is held out for
evaluation (`ecssd_split`), the other 800 train.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from defvos_core.config import TrackerConfig
from defvos_core.data.ecssd import StaticImage, load_static_image
from defvos_core.data.paste import cut_out, paste
from defvos_core.data.prompt_sampling import jitter_box, mask_box, sample_clicks
from defvos_core.data.roots import ECSSD_NAME
from defvos_core.data.sequences import VideoSequence
from defvos_core.data.still_images import HELDOUT_EVERY, split_still_images
from defvos_core.inference.preprocess import FrameGeometry, frame_to_tensor
from defvos_core.model.checkpoint import atomic_torch_save
from defvos_core.model.prompt_head import ObjectPrompt, prompt_maps
from defvos_core.model.vos_model import STRIDE, VOSModel

LOGGER = logging.getLogger("defvos")
MIN_OBJECT_PIXELS = 16  # an object showing less in a crop is not a target there
OVERLAP_PROBABILITY = 0.75  # composites: the pasted object's centre lies in the base box
PASTED_AREA = (0.3, 1.0)  # composites: pasted box area / base box area


def ecssd_split(items: list[StaticImage]) -> tuple[list[StaticImage], list[StaticImage]]:
    """(train 800, held-out 200) of ECSSD in name order: every fifth image is held out."""
    return split_still_images(items, HELDOUT_EVERY[ECSSD_NAME])


@dataclass
class CachedImage:
    """Frozen-encoder features of one image at the processing size, and its objects."""

    name: str
    skip4: torch.Tensor  # (C4, h/4, w/4) float16, h x w the padded size
    skip8: torch.Tensor  # (C8, h/8, w/8)
    tokens: torch.Tensor  # (C, h/16, w/16)
    labels: torch.Tensor  # (h, w) uint8: 0 background (and padding), k object k


def compose_pair(rgb: np.ndarray, mask: np.ndarray, donor_rgb: np.ndarray,
                 donor_mask: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, labels) of `rgb` (object 1: `mask`) with the donor's object (2) pasted on it."""
    height, width = mask.shape
    x0, y0, x1, y1 = mask_box(mask)
    area = rng.uniform(*PASTED_AREA) * (x1 - x0) * (y1 - y0)
    crop_rgb, crop_mask = cut_out(donor_rgb, donor_mask, area, (height, width))
    if rng.random() < OVERLAP_PROBABILITY:
        centre_x, centre_y = rng.uniform(x0, x1), rng.uniform(y0, y1)
    else:
        centre_x, centre_y = rng.uniform(0, width), rng.uniform(0, height)
    left = int(np.clip(round(centre_x - crop_mask.shape[1] / 2), 0, width - crop_mask.shape[1]))
    top = int(np.clip(round(centre_y - crop_mask.shape[0] / 2), 0, height - crop_mask.shape[0]))
    return paste(rgb, mask.astype(np.uint8), crop_rgb, crop_mask, top, left, 2)


def _image_sources(ecssd: list[StaticImage], davis: list[VideoSequence], frame_step: int,
                   composites: bool):
    """Yield (name, loader) pairs; a loader returns (RGB, labels) at the input size.

    A composite's donor and placement depend on its base image's name only, so the same name
    always means the same image (the feature cache relies on it).
    """
    loaders = [(item.name, lambda item=item: load_static_image(item)) for item in ecssd]
    for sequence in davis:
        for index in range(0, len(sequence), frame_step):
            if sequence.has_mask(index):
                loaders.append((f"{sequence.name}/{sequence.frame_stem(index)}",
                                lambda s=sequence, i=index: (s.load_frame(i),
                                                             (s.load_label_map(i) == 1))))
    for name, load in loaders:
        yield name, lambda load=load: _as_labels(*load())
    if not composites:
        return
    for name, load in loaders:
        draw = np.random.default_rng(zlib.crc32(name.encode()))
        donor = ecssd[int(draw.integers(len(ecssd)))]

        def composite(load=load, donor=donor, draw=draw):
            rgb, mask = load()
            donor_rgb, donor_labels = load_static_image(donor)
            if not mask.any():
                return _as_labels(rgb, mask)
            return compose_pair(rgb, mask > 0, donor_rgb, donor_labels > 0, draw)
        yield f"{name}+{donor.name}", composite


def _as_labels(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rgb, mask.astype(np.uint8)


def _encode(model: VOSModel, name: str, rgb: np.ndarray, labels: np.ndarray,
            size: int) -> CachedImage:
    geometry = FrameGeometry.for_input(rgb.shape[0], rgb.shape[1], size,
                                       TrackerConfig.max_long_side)
    features = model.encode(frame_to_tensor(rgb, geometry, torch.device("cpu"), torch.float32))
    resized = F.interpolate(torch.from_numpy(labels)[None, None].float(),
                            size=geometry.resized, mode="nearest")
    padded = torch.zeros(geometry.padded, dtype=torch.uint8)
    padded[:geometry.resized[0], :geometry.resized[1]] = resized[0, 0].to(torch.uint8)
    return CachedImage(name, features.skip4[0].half(), features.skip8[0].half(),
                       features.tokens[0].half(), padded)


@torch.inference_mode()
def encode_images(model: VOSModel, ecssd: list[StaticImage], davis: list[VideoSequence],
                  frame_step: int, size: int, composites: bool,
                  cache: Path | None = None) -> list[CachedImage]:
    """Encode every ECSSD image and every `frame_step`-th DAVIS frame (object 1).

    With `composites`, each of them again with a pasted second object. cache: a folder of
    one file per image name (the same encoder and size), read when there, written when not.
    Images that show no object (e.g. a frame where it is out of view) are left out.
    """
    cached = []
    for name, load in _image_sources(ecssd, davis, frame_step, composites):
        path = cache / f"{name.replace('/', '__')}.pt" if cache is not None else None
        if path is not None and path.is_file():
            image = CachedImage(**torch.load(path, weights_only=True))
        else:
            image = _encode(model, name, *load(), size)
            if path is not None:
                atomic_torch_save(vars(image), path)
        if image.labels.any():
            cached.append(image)
    return cached


def cached_features(model: VOSModel, weights_sha256: str, ecssd: list[StaticImage],
                    davis: list[VideoSequence], frame_step: int, size: int, composites: bool,
                    cache_dir: Path | None) -> list[CachedImage]:
    """`encode_images` with a per-image cache under `cache_dir`, keyed by weights and size."""
    folder = (cache_dir / f"prompt-features-{weights_sha256[:16]}-{size}"
              if cache_dir is not None else None)
    images = encode_images(model, ecssd, davis, frame_step, size, composites, folder)
    LOGGER.info("features of %d images (cache: %s)", len(images), folder)
    return images


@dataclass
class PromptBatch:
    """A training batch: feature crops, prompt maps and target masks."""

    skip4: torch.Tensor  # (B, C4, crop/4, crop/4) float32
    skip8: torch.Tensor  # (B, C8, crop/8, crop/8)
    tokens: torch.Tensor  # (B, C, crop/16, crop/16)
    maps: torch.Tensor  # (B, P, crop/4, crop/4)
    target: torch.Tensor  # (B, 1, crop, crop) float {0, 1}


def _crop_offset(extent: int, crop: int, center: float, rng: np.random.Generator) -> int:
    """Return a STRIDE-aligned start in [0, extent - crop] whose window holds `center`."""
    starts = np.arange(0, extent - crop + 1, STRIDE)
    holding = starts[(starts <= center) & (center < starts + crop)]
    return int(rng.choice(holding if len(holding) else starts))


def draw_prompt(mask: np.ndarray, rng: np.random.Generator, box_fraction: float) -> ObjectPrompt:
    """Draw a jittered box (probability `box_fraction`) or 1-3 positive + 0-2 negative clicks."""
    if rng.random() < box_fraction:
        return ObjectPrompt(box=jitter_box(mask_box(mask), mask.shape, rng))
    return ObjectPrompt(clicks=[(x + 0.5, y + 0.5, label)
                                for x, y, label in sample_clicks(mask, rng)])


def sample_batch(images: list[CachedImage], batch_size: int, crop: int, box_fraction: float,
                 rng: np.random.Generator) -> PromptBatch:
    """Random images, a crop around an object pixel, one object of the crop, one prompt."""
    rows = []
    while len(rows) < batch_size:
        image = images[int(rng.integers(len(images)))]
        labels = image.labels.numpy()
        ys, xs = np.nonzero(labels)
        pick = int(rng.integers(len(ys)))
        top = _crop_offset(labels.shape[0], crop, ys[pick], rng)
        left = _crop_offset(labels.shape[1], crop, xs[pick], rng)
        window = labels[top:top + crop, left:left + crop]
        ids, counts = np.unique(window[window > 0], return_counts=True)
        ids = ids[counts >= MIN_OBJECT_PIXELS]
        if not len(ids):
            continue
        mask = window == ids[int(rng.integers(len(ids)))]
        prompt = draw_prompt(mask, rng, box_fraction)
        crops = [feature[:, top // s:(top + crop) // s, left // s:(left + crop) // s].float()
                 for feature, s in ((image.skip4, 4), (image.skip8, 8), (image.tokens, 16))]
        rows.append((*crops, prompt_maps([prompt], (crop, crop))[0],
                     torch.from_numpy(mask).float()[None]))
    return PromptBatch(*(torch.stack(column) for column in zip(*rows)))
