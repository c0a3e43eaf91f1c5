"""Speed and memory benchmark of the tracker (prints figures; never asserts on time).

    python -m defvos_core.bench [--weights W] [--device cpu|cuda] [--backend torch|onnxruntime]
        [--sizes 240,480] [--objects 1,5,10] [--frames 100] [--long 1000] [--fp16 | --bf16]
        [--profile] [--cuda-graphs] [--slots-per-bank 1]

For each processing size and object count: median ms/frame over `--frames` frames after a
warm-up, the same median once `--long` frames have gone through the memory, peak memory
(CUDA allocator peak, or the process's peak RSS on CPU) and the memory tensors' size.
Frames are the shipped sample clip (looped), resized so the short side is the size.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from defvos_core.build import build_tracker
from defvos_core.config import OnnxConfig, TrackerConfig
from defvos_core.data.masks import read_label_map
from defvos_core.data.video_io import iter_video_frames
from defvos_core.inference.preprocess import resize_labels
from defvos_core.inference.tracker import Tracker
from defvos_core.training.provenance import cpu_name

SAMPLE = Path(__file__).resolve().parent / "assets" / "sample" / "bear"


def sample_clip(short_side: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Return the sample clip's frames resized to `short_side` (camera-size input) + its seed."""
    import cv2

    frames = [rgb for _, rgb in iter_video_frames(SAMPLE / "frames")]
    height, width = frames[0].shape[:2]
    size = (round(width * short_side / height), short_side)
    frames = [cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR) for rgb in frames]
    seed = resize_labels(read_label_map(SAMPLE / "masks" / "00000.png"), (size[1], size[0]))
    return frames, seed


def multi_object_seed(seed: np.ndarray, objects: int) -> np.ndarray:
    """Return the clip's object as id 1 plus `objects - 1` boxes along the top rows."""
    labels = seed.astype(np.int64).copy()
    height, width = labels.shape
    box = max(4, width // (2 * objects))
    for k in range(2, objects + 1):
        left = (k - 2) * (width // max(1, objects - 1))
        labels[: height // 6, left: left + box] = k
    return labels


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_steps(tracker: Tracker, frames: list[np.ndarray], start: int, count: int,
                device: str) -> list[float]:
    times = []
    for index in range(start, start + count):
        synchronize(device)
        begin = time.perf_counter()
        tracker.step(frames[index % len(frames)])
        synchronize(device)
        times.append((time.perf_counter() - begin) * 1000)
    return times


def peak_memory_mb(device: str) -> tuple[float, str]:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20, "CUDA peak allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def bench_one(args: argparse.Namespace, short_side: int, objects: int) -> dict:
    providers = args.providers.split(",") if args.providers else []
    config = TrackerConfig(size=short_side, backend=args.backend, device=args.device,
                           fp16=args.fp16, bf16=args.bf16, cuda_graphs=args.cuda_graphs,
                           slots_per_bank=args.slots_per_bank,
                           onnx=OnnxConfig(providers=providers))
    tracker = build_tracker(args.weights, config)
    frames, seed = sample_clip(short_side)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    tracker.add_objects(frames[0], multi_object_seed(seed, objects))
    timed_steps(tracker, frames, 1, args.warmup, args.device)
    fresh = timed_steps(tracker, frames, 1 + args.warmup, args.frames, args.device)
    done = 1 + args.warmup + args.frames
    filler = max(0, args.long - done - args.frames)
    for index in range(done, done + filler):
        tracker.step(frames[index % len(frames)])
    late = timed_steps(tracker, frames, done + filler, args.frames, args.device)
    peak, peak_kind = peak_memory_mb(args.device)
    return {"size": short_side, "objects": objects, "input": frames[0].shape[:2],
            "ms": statistics.median(fresh), "ms_late": statistics.median(late),
            "frames_total": done + filler + args.frames, "peak_mb": peak, "peak_kind": peak_kind,
            "memory_mb": tracker.memory_bytes() / 2**20,
            "memory_frames": tracker.memory.num_long_term_frames(), "tracker": tracker,
            "clip": (frames, seed)}


def profile(tracker: Tracker, frames: list[np.ndarray], device: str) -> str:
    """Top operators of 20 tracked frames (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if device.startswith("cuda") else [])
    with torch_profile(activities=activities) as prof:
        timed_steps(tracker, frames, 0, 20, device)
    key = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=15)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m defvos_core.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights file (default: shipped student)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    parser.add_argument("--providers", default=None, help="onnxruntime providers, comma list")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    precision.add_argument("--bf16", action="store_true",
                           help="bfloat16 (torch: CPUs with native bf16, or CUDA)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="torch on CUDA: replay the per-frame calls as CUDA graphs")
    parser.add_argument("--slots-per-bank", type=int, default=TrackerConfig.slots_per_bank,
                        help="objects per identity bank (0: all the model's ID slots; each "
                        "bank costs a propagation + decoder pass)")
    parser.add_argument("--sizes", default="240,480", help="processing short sides")
    parser.add_argument("--objects", default="1,5,10", help="object counts")
    parser.add_argument("--frames", type=int, default=100, help="timed frames per median")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--long", type=int, default=1000,
                        help="frames through the memory before the second median")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--profile", action="store_true",
                        help="print the top operators of the first configuration")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(c) for c in args.objects.split(",")]
    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"{cpu_name()}, {torch.get_num_threads()} threads")
    print(f"defvos bench: backend={args.backend} device={args.device} ({device_name}) "
          f"fp16={args.fp16} bf16={args.bf16} cuda_graphs={args.cuda_graphs} "
          f"slots_per_bank={args.slots_per_bank} torch={torch.__version__}")
    print(f"median over {args.frames} frames after {args.warmup} warm-up; 'late' = after "
          f"{args.long} frames")
    header = (f"{'size':>5} {'input':>9} {'obj':>4} {'ms/frame':>9} {'ms late':>8} "
              f"{'peak MB':>8} {'memory MB':>10} {'mem frames':>10}")
    print(header)
    first = None
    for size in sizes:
        for count in counts:
            row = bench_one(args, size, count)
            first = first or row
            height, width = row["input"]
            print(f"{size:>5} {f'{width}x{height}':>9} {count:>4} {row['ms']:>9.1f} "
                  f"{row['ms_late']:>8.1f} {row['peak_mb']:>8.0f} {row['memory_mb']:>10.2f} "
                  f"{row['memory_frames']:>10}", flush=True)
            graphs = row["tracker"].backend.graphs_summary()
            if graphs is not None:
                print(f"# cuda graphs: {graphs}")
    print(f"peak memory is the {first['peak_kind']}")
    if args.profile and first is not None:
        print(profile(first["tracker"], first["clip"][0], args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
