"""Two objects whose boxes overlap: a DAVIS video with a still object pasted over its object.

The pasted object (an ECSSD photo's foreground) is scaled to about the DAVIS object's box
area, placed so that its box starts at the DAVIS object's box centre (the two boxes overlap
by about half of the DAVIS box's width), drifts right 2 px a frame (bouncing at the edges)
and occludes the DAVIS object. Labels: 1 the DAVIS object (where visible), 2 the pasted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from defvos_core.data.ecssd import StaticImage, load_static_image
from defvos_core.data.paste import cut_out, paste
from defvos_core.data.prompt_sampling import mask_box
from defvos_core.data.sequences import VideoSequence

AREA_RATIO = 0.7  # pasted box area / DAVIS object box area
DRIFT = 2  # pixels a frame


@dataclass
class CompositeClip:
    """Frames and ground-truth label maps of a composed two-object clip."""

    name: str
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB
    labels: list[np.ndarray]  # (H, W) uint8: 0 bg, 1 DAVIS object, 2 pasted object, 255 void


def overlap_composite(sequence: VideoSequence, still: StaticImage) -> CompositeClip:
    """`sequence` (object 1) with `still`'s object (2) pasted to overlap object 1's box."""
    first = sequence.load_label_map(0)
    height, width = first.shape
    x0, y0, x1, y1 = mask_box(first == 1)
    image, still_labels = load_static_image(still)
    rgb, mask = cut_out(image, still_labels > 0, AREA_RATIO * (x1 - x0) * (y1 - y0),
                        (height, width))
    paste_h, paste_w = mask.shape
    left = int(np.clip(round((x0 + x1) / 2), 0, width - paste_w))
    top = int(np.clip(round((y0 + y1) / 2 - paste_h / 2), 0, height - paste_h))
    frames, labels = [], []
    span = max(1, width - paste_w)
    for index in range(len(sequence)):
        # Position bounces between the frame's edges.
        travel = (left + DRIFT * index) % (2 * span)
        x = travel if travel <= span else 2 * span - travel
        frame, label = paste(sequence.load_frame(index), sequence.load_label_map(index), rgb,
                             mask, top, x, 2)
        frames.append(frame)
        labels.append(label)
    return CompositeClip(f"{sequence.name}+{still.name.split('/')[-1]}", frames, labels)
