r"""Offline segmentation CLI.

    python -m defvos_core.segment --frames DIR_OR_VIDEO --seed FIRST.png --out OUT_DIR \\
        [--weights PATH] [--size 240] [--device cpu|cuda] [--backend torch|onnxruntime]
    python -m defvos_core.segment --frames F --box 10,20,110,220 --box ... --out OUT_DIR
    python -m defvos_core.segment --frames F --point "50,60;80,90,0" --point ... --out OUT_DIR

Seeds (pixel coordinates of the first frame): `--seed` (a mask), `--box x0,y0,x1,y1` (one
object per flag) and `--point x,y[,label][;x,y[,label]...]` (one object per flag; label 1 on
the object, the default, 0 off it), alone or mixed. Box objects are numbered first, then
point objects, in the order given, from 1 (or after the seed mask's largest id).

Writes one indexed PNG per frame (same stem as the frame, DAVIS palette) and `overlay.mp4`,
shows a progress bar and prints frames/s. Bad input exits non-zero with a one-line error.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from defvos_core.build import build_tracker
from defvos_core.config import BACKENDS, PROMPT_METHODS, OnnxConfig, PromptConfig, TrackerConfig
from defvos_core.data.masks import read_label_map, write_label_map
from defvos_core.data.video_io import VideoWriter, count_frames, iter_video_frames
from defvos_core.errors import SeedError
from defvos_core.inference.prompts import SeedPrompts, check_prompts
from defvos_core.inference.seeds import check_seed, clean_seed, seed_object_ids
from defvos_core.inference.tracker import Tracker
from defvos_core.inference.video import segment_frames
from defvos_core.overlay import overlay


@dataclass
class SegmentSummary:
    frames: int
    seconds: float  # tracking time (model + memory), excluding file I/O

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m defvos_core.segment",
                                     description="Segment the seeded objects in every frame.")
    parser.add_argument("--frames", required=True, type=Path,
                        help="folder of JPEG/PNG frames (sorted by name) or a video file")
    parser.add_argument("--seed", type=Path, default=None,
                        help="indexed PNG for the first frame: 0 background, k object k")
    parser.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                        help="one object's box on the first frame, pixels (left, top, right, "
                        "bottom); repeat for more objects (ids 1, 2, ... after the seed's)")
    parser.add_argument("--point", action="append", default=[], metavar="X,Y[,L][;X,Y[,L]]",
                        help="one object's clicks on the first frame, pixels, ';' between "
                        "clicks, label L 1 on the object (default) or 0 off it; repeat for "
                        "more objects (numbered after the boxes)")
    parser.add_argument("--box-method", default=PromptConfig.box_method,
                        choices=PROMPT_METHODS, help="how a box becomes a mask")
    parser.add_argument("--points-method", default=PromptConfig.points_method,
                        choices=[m for m in PROMPT_METHODS if not m.startswith("rect")],
                        help="how clicks become a mask")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--weights", type=Path, default=None,
                        help="weights file (default: the shipped student)")
    parser.add_argument("--size", type=int, default=TrackerConfig.size,
                        help="short side the frames are processed at (0: input size; "
                        f"default {TrackerConfig.size})")
    parser.add_argument("--device", default=TrackerConfig.device, help="cpu or cuda")
    parser.add_argument("--backend", default=TrackerConfig.backend, choices=BACKENDS)
    parser.add_argument("--providers", default=None,
                        help="onnxruntime providers, comma separated (default: best available)")
    parser.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    parser.add_argument("--mem-every", type=int, default=TrackerConfig.mem_every)
    parser.add_argument("--max-memory-frames", type=int, default=TrackerConfig.max_memory_frames)
    parser.add_argument("--no-video", action="store_true", help="skip the overlay MP4")
    parser.add_argument("--fps", type=float, default=12.0, help="frame rate of the overlay MP4")
    return parser


def make_tracker(args: argparse.Namespace) -> Tracker:
    """Build the tracker the command line asks for."""
    providers = [p.strip() for p in (args.providers or "").split(",") if p.strip()]
    config = TrackerConfig(size=args.size or None, mem_every=args.mem_every,
                           max_memory_frames=args.max_memory_frames, backend=args.backend,
                           device=args.device, fp16=args.fp16,
                           onnx=OnnxConfig(providers=providers),
                           prompts=PromptConfig(box_method=args.box_method,
                                                points_method=args.points_method))
    return build_tracker(args.weights, config)


def _numbers(text: str, flag: str, counts: tuple[int, ...]) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise ValueError(f"{flag} {text!r}: expected {' or '.join(map(str, counts))} "
                         "comma-separated numbers")
    return values


def parse_prompts(boxes: list[str], points: list[str], first_id: int = 1
                  ) -> tuple[dict[int, list[float]], dict[int, list[list[float]]]]:
    """--box / --point texts -> ({id: box}, {id: clicks}), ids from `first_id`, boxes first."""
    box_prompts = {first_id + i: _numbers(text, "--box", (4,)) for i, text in enumerate(boxes)}
    first_id += len(boxes)
    point_prompts = {}
    for i, text in enumerate(points):
        clicks = [_numbers(click, "--point", (2, 3)) for click in text.split(";") if click.strip()]
        if not clicks:
            raise ValueError(f"--point {text!r}: expected x,y[,label][;x,y[,label]...]")
        point_prompts[first_id + i] = clicks
    return box_prompts, point_prompts


def read_seeds(args: argparse.Namespace, frame_shape: tuple[int, ...]
               ) -> tuple[np.ndarray | None, SeedPrompts]:
    """Return the seed mask (or None) and the checked prompts of the command line."""
    if args.seed is None and not args.box and not args.point:
        raise ValueError("no seed: give --seed, --box or --point")
    seed, mask_ids = None, []
    if args.seed is not None:
        if not args.seed.is_file():
            raise FileNotFoundError(f"{args.seed}: seed mask not found")
        seed = read_label_map(args.seed)
        try:
            check_seed(seed, frame_shape)  # the tracker's own checks, before it is built
        except SeedError as error:
            raise ValueError(f"{args.seed}: {error}") from error
        mask_ids = seed_object_ids(clean_seed(seed))
    boxes, points = parse_prompts(args.box, args.point, max(mask_ids, default=0) + 1)
    return seed, check_prompts(boxes, points, frame_shape, mask_ids)


def run(args: argparse.Namespace) -> SegmentSummary:
    """Segment `args.frames` from `args.seed` into `args.out`; raises on bad input."""
    if not args.frames.exists():
        raise FileNotFoundError(f"{args.frames}: no such folder or video")
    if args.seed is not None and not args.seed.is_file():
        raise FileNotFoundError(f"{args.seed}: seed mask not found")
    frames = iter_video_frames(args.frames)
    first_stem, first_frame = next(frames)  # raises ValueError naming the file/video
    seed, prompts = read_seeds(args, first_frame.shape)
    tracker = make_tracker(args)
    tracker.prompts.check_ready(prompts)  # a head is there if a method needs one
    args.out.mkdir(parents=True, exist_ok=True)

    def all_frames():
        yield first_stem, first_frame
        yield from frames

    writer = None if args.no_video else VideoWriter(args.out / "overlay.mp4", fps=args.fps)
    seconds, count = 0.0, 0
    progress = tqdm(total=count_frames(args.frames), unit="frame", desc="segmenting")
    try:
        results = segment_frames(tracker, all_frames(), seed, prompts)
        while True:
            start = time.perf_counter()
            try:
                stem, frame, result = next(results)
            except StopIteration:
                break
            seconds += time.perf_counter() - start
            count += 1
            write_label_map(args.out / f"{stem}.png", result.labels)
            if writer is not None:
                writer.write(overlay(frame, result.labels))
            progress.update(1)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    return SegmentSummary(count, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{summary.frames} frames in {summary.seconds:.2f} s: {summary.fps:.1f} frames/s "
          f"(tracking only) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
