r"""Offline segmentation CLI.

    python -m defvos_core.segment --frames DIR_OR_VIDEO --seed FIRST.png --out OUT_DIR \\
        [--weights PATH] [--size 240] [--device cpu|cuda] [--backend torch|onnxruntime]

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

from tqdm import tqdm

from defvos_core.build import build_tracker
from defvos_core.config import BACKENDS, OnnxConfig, TrackerConfig
from defvos_core.data.masks import overlay, read_label_map, write_label_map
from defvos_core.data.video_io import VideoWriter, count_frames, iter_video_frames
from defvos_core.errors import SeedError
from defvos_core.inference.seeds import check_seed
from defvos_core.inference.tracker import Tracker
from defvos_core.inference.video import segment_frames


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
    parser.add_argument("--seed", required=True, type=Path,
                        help="indexed PNG for the first frame: 0 background, k object k")
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
                           onnx=OnnxConfig(providers=providers))
    return build_tracker(args.weights, config)


def run(args: argparse.Namespace) -> SegmentSummary:
    """Segment `args.frames` from `args.seed` into `args.out`; raises on bad input."""
    if not args.frames.exists():
        raise FileNotFoundError(f"{args.frames}: no such folder or video")
    if not args.seed.is_file():
        raise FileNotFoundError(f"{args.seed}: seed mask not found")
    seed = read_label_map(args.seed)
    frames = iter_video_frames(args.frames)
    first_stem, first_frame = next(frames)  # raises ValueError naming the file/video
    try:
        check_seed(seed, first_frame.shape)  # the tracker's own checks, before it is built
    except SeedError as error:
        raise ValueError(f"{args.seed}: {error}") from error
    tracker = make_tracker(args)
    args.out.mkdir(parents=True, exist_ok=True)

    def all_frames():
        yield first_stem, first_frame
        yield from frames

    writer = None if args.no_video else VideoWriter(args.out / "overlay.mp4", fps=args.fps)
    seconds, count = 0.0, 0
    progress = tqdm(total=count_frames(args.frames), unit="frame", desc="segmenting")
    try:
        results = segment_frames(tracker, all_frames(), seed)
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
