"""How far the trained deformable offsets move the sampling points off the reference grid.

`record_offsets(model)` records, for every propagation layer, the offset of each sampled
point from its reference point while the model runs, in reference-grid cells (the unit of
`ModelConfig.offset_range`) and in stride-16 feature cells; `offset_statistics` summarises
them. Untrained offsets are exactly zero (the offset network starts at zero), so these
figures are what training learned.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from defvos_core.model.attention import reference_grid
from defvos_core.model.vos_model import VOSModel

MOVED_CELLS = 0.1  # a point counts as moved when its offset is at least this many grid cells


@dataclass
class OffsetStats:
    """Offset lengths of one propagation layer over every recorded frame and point."""

    layer: int
    points: int  # offsets recorded (frames x sampled points)
    mean_cells: float  # mean length, reference-grid cells
    p95_cells: float
    max_cells: float
    mean_features: float  # mean length in stride-16 feature cells
    moved_fraction: float  # share of points moved by at least MOVED_CELLS cells
    range_cells: float  # the bound (ModelConfig.offset_range), per axis


@contextmanager
def record_offsets(model: VOSModel) -> Iterator[list[list[torch.Tensor]]]:
    """Record each layer's offsets while the block runs.

    Yields per layer a list of (P, 2) tensors of offset lengths (reference-grid cells,
    stride-16 feature cells), one per `sample_points` call.
    """
    records: list[list[torch.Tensor]] = [[] for _ in model.propagation.layers]
    samplers = [layer.sampler for layer in model.propagation.layers]

    def recording(index: int, sampler, original):
        def sample_points(query_map: torch.Tensor) -> torch.Tensor:
            points = original(query_map)  # (B, Gh, Gw, 2) in [-1, 1]
            rows, cols = sampler.sample_grid
            height, width = query_map.shape[-2:]
            reference = reference_grid(rows, cols, points.device, torch.float32)
            shift = points.float() - reference  # normalised units
            cells = shift * torch.tensor([cols / 2, rows / 2], device=points.device)
            features = shift * torch.tensor([width / 2, height / 2], device=points.device)
            records[index].append(torch.stack((cells.norm(dim=-1).flatten(),
                                               features.norm(dim=-1).flatten()), 1).cpu())
            return points
        return sample_points

    for index, sampler in enumerate(samplers):
        sampler.sample_points = recording(index, sampler, sampler.sample_points)
    try:
        yield records
    finally:
        for sampler in samplers:
            del sampler.sample_points  # back to the class's method


def offset_statistics(records: list[list[torch.Tensor]], offset_range: float
                      ) -> list[OffsetStats]:
    """Summarise `record_offsets` records per layer (layers with no record are left out)."""
    stats = []
    for layer, tensors in enumerate(records):
        if not tensors:
            continue
        lengths = torch.cat(tensors)  # (P, 2)
        cells, features = lengths[:, 0], lengths[:, 1]
        stats.append(OffsetStats(
            layer=layer, points=len(cells), mean_cells=float(cells.mean()),
            p95_cells=float(torch.quantile(cells, 0.95)), max_cells=float(cells.max()),
            mean_features=float(features.mean()),
            moved_fraction=float((cells >= MOVED_CELLS).float().mean()),
            range_cells=offset_range))
    return stats


def format_offsets(stats: list[OffsetStats]) -> str:
    """Format `offset_statistics` as a table."""
    lines = [f"offsets from the reference grid (bound {stats[0].range_cells:g} cells per axis)"
             if stats else "no offsets recorded",
             f"{'layer':>5} {'points':>8} {'mean':>6} {'p95':>6} {'max':>6} "
             f"{'mean (feature cells)':>21} {'moved >= ' + str(MOVED_CELLS):>11}"]
    for s in stats:
        lines.append(f"{s.layer:>5} {s.points:>8} {s.mean_cells:6.3f} {s.p95_cells:6.3f} "
                     f"{s.max_cells:6.3f} {s.mean_features:21.3f} {s.moved_fraction:11.1%}")
    return "\n".join(lines)
