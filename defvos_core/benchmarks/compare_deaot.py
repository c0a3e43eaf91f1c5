"""Side by side, one run: the defvos student vs the official DeAOT-T and AOT-T engines.

    python -m defvos_core.benchmarks.compare_deaot --device cuda --sizes 240,480
        --objects 1,5,10 --frames 200 --long 1000 [--fp16] [--engines ...]

Every engine runs in this process on the same device, clip, object seeds and frame count:
the shipped sample clip (looped) resized so its short side is the size (the official engines
get it at their evaluator's 16k+1 size, e.g. 241x433 for 427x240), and K objects made by
splitting the clip's seed mask into K vertical strips. A frame's time is wall clock from the
uint8 RGB frame on the host to the uint8 label map back on the host, synchronised; figures
are medians over `--frames` frames after `--warmup` frames. Ratios are each engine's time
over the fastest defvos variant's of the same setting. The long run (`--long` frames, one
size and object count) prints latency and memory at its start and end: the official
engines keep a long-term memory frame every `--official-gap` frames and never drop one;
defvos's memory is bounded. Engines: defvos (torch, eager), defvos-graphs (CUDA graphs;
no effect on a CPU), DeAOT-T and AOT-T (`defvos_core.benchmarks.official_aot`).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np
import torch

from defvos_core.bench import sample_clip
from defvos_core.benchmarks.official_aot import (
    PEERS,
    OfficialEngine,
    aligned_size,
    peer_unavailable,
    short_term_path,
)
from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig

OURS = ("defvos", "defvos-graphs")


class Engine(Protocol):
    """What the timing loop drives."""

    def add_objects(self, frame: np.ndarray, labels: np.ndarray) -> None: ...

    def step(self, frame: np.ndarray) -> np.ndarray: ...

    def memory_bytes(self) -> int: ...

    def memory_frames(self) -> int: ...


class DefvosEngine:
    """The defvos tracker (torch backend) behind the `Engine` protocol."""

    def __init__(self, weights: str | None, size: int, device: str, fp16: bool,
                 cuda_graphs: bool) -> None:
        config = TrackerConfig(size=size, device=device, fp16=fp16, cuda_graphs=cuda_graphs)
        self.tracker = build_tracker(weights, config)

    def add_objects(self, frame: np.ndarray, labels: np.ndarray) -> None:
        self.tracker.add_objects(frame, labels)

    def step(self, frame: np.ndarray) -> np.ndarray:
        return self.tracker.step(frame).labels

    def memory_bytes(self) -> int:
        return self.tracker.memory_bytes()

    def memory_frames(self) -> int:
        return self.tracker.memory.num_long_term_frames()

    def graphs_summary(self) -> str | None:
        """Return what the CUDA graphs served (None without them)."""
        return self.tracker.backend.graphs_summary()


@dataclass
class Clip:
    """Frames and the K-object seed of one engine at one size."""

    frames: list[np.ndarray]
    seed: np.ndarray  # (H, W) int64, objects 1..K


@dataclass
class Run:
    """Per-frame times of one engine and memory snapshots (frame index -> figures)."""

    times: list[float]
    snapshots: dict[int, tuple[float, int, float]] = field(default_factory=dict)


def strip_seed(mask: np.ndarray, objects: int) -> np.ndarray:
    """Split the foreground of `mask` into `objects` vertical strips, labelled 1..objects."""
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size < objects:
        raise ValueError(f"the seed mask is {columns.size} columns wide: too narrow for "
                         f"{objects} objects")
    edges = np.linspace(columns[0], columns[-1] + 1, objects + 1).round().astype(int)
    labels = np.zeros(mask.shape, np.int64)
    for index in range(objects):
        strip = np.zeros(mask.shape, bool)
        strip[:, edges[index]:edges[index + 1]] = True
        labels[strip & (mask > 0)] = index + 1
    return labels


def clips(size: int, objects: int) -> dict[str, Clip]:
    """Return the clip for defvos ('defvos') and for the official engines ('official')."""
    frames, seed_mask = sample_clip(size)
    seed = strip_seed(seed_mask, objects)
    height, width = aligned_size(*frames[0].shape[:2])
    official = [cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
                for rgb in frames]
    official_seed = cv2.resize(seed.astype(np.uint8), (width, height),
                               interpolation=cv2.INTER_NEAREST).astype(np.int64)
    if len(np.unique(official_seed)) != objects + 1:
        raise ValueError(f"an object strip vanished when resizing the seed to {width}x{height}")
    return {"defvos": Clip(frames, seed), "official": Clip(official, official_seed)}


def device_memory_mb(device: str) -> float:
    """CUDA memory allocated now, or this process's resident set on a CPU."""
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**20
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * (2**12) / 2**20


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(engine: Engine, clip: Clip, count: int, device: str,
        snapshot_at: Sequence[int] = ()) -> Run:
    """Seed the engine on frame 0, then time `count` frames (the clip looped)."""
    engine.add_objects(clip.frames[0], clip.seed)
    result = Run([])
    for index in range(1, count + 1):
        synchronize(device)
        begin = time.perf_counter()
        engine.step(clip.frames[index % len(clip.frames)])
        synchronize(device)
        result.times.append((time.perf_counter() - begin) * 1000)
        if index in snapshot_at:
            result.snapshots[index] = (engine.memory_bytes() / 2**20, engine.memory_frames(),
                                       device_memory_mb(device))
    return result


def graphs_note(engine: Engine) -> str | None:
    """Return the CUDA-graph summary of a defvos engine that uses them."""
    return engine.graphs_summary() if isinstance(engine, DefvosEngine) else None


def build(name: str, args: argparse.Namespace, size: int) -> Engine:
    if name in OURS:
        return DefvosEngine(args.weights, size, args.device, args.fp16, name == "defvos-graphs")
    return OfficialEngine(name, args.device, args.fp16, args.official_gap)


def release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def compare(args: argparse.Namespace, engines: list[str]) -> None:
    """Print the side-by-side table: every engine at every size and object count."""
    print(f"{'size':>4} {'input':>9} {'obj':>3} {'engine':<13} {'ms/frame':>8} {'fps':>7} "
          f"{'vs ours':>7} {'mem MB':>7}")
    for size in args.sizes:
        for objects in args.objects:
            data = clips(size, objects)
            rows = []
            for name in engines:
                clip = data["defvos" if name in OURS else "official"]
                engine = build(name, args, size)
                timed = run(engine, clip, args.warmup + args.frames, args.device)
                rows.append((name, clip, statistics.median(timed.times[args.warmup:]),
                             engine.memory_bytes() / 2**20, graphs_note(engine)))
                del engine
                release(args.device)
            ours = min(ms for name, _, ms, _, _ in rows if name in OURS)
            for name, clip, ms, memory, note in rows:
                height, width = clip.frames[0].shape[:2]
                print(f"{size:>4} {f'{width}x{height}':>9} {objects:>3} {name:<13} {ms:>8.2f} "
                      f"{1000 / ms:>7.1f} {ms / ours:>6.2f}x {memory:>7.1f}", flush=True)
            for name, _, _, _, note in rows:
                if note:
                    print(f"# {name}: {note}")


def long_run(args: argparse.Namespace, engines: list[str]) -> None:
    """Latency and memory at the start and the end of `--long` frames."""
    size, objects = args.long_size, args.long_objects
    window = max(1, min(args.frames, (args.long - args.warmup) // 4))
    start, end = args.warmup + window, args.long
    print(f"\nlong run: size {size}, {objects} objects, {args.long} frames; ms = median over "
          f"frames {args.warmup + 1}-{start} (start) and the last {window} (end); memory "
          f"after frame {start} and {end}")
    print(f"{'engine':<13} {'ms start':>8} {'ms end':>8} {'memory MB':>17} {'mem frames':>10} "
          f"{'device MB':>17}")
    data = clips(size, objects)
    for name in engines:
        engine = build(name, args, size)
        timed = run(engine, data["defvos" if name in OURS else "official"], args.long,
                    args.device, snapshot_at=(start, end))
        (mem0, frames0, dev0), (mem1, frames1, dev1) = timed.snapshots[start], timed.snapshots[end]
        print(f"{name:<13} {statistics.median(timed.times[args.warmup:start]):>8.2f} "
              f"{statistics.median(timed.times[-window:]):>8.2f} "
              f"{f'{mem0:.1f} -> {mem1:.1f}':>17} {f'{frames0} -> {frames1}':>10} "
              f"{f'{dev0:.0f} -> {dev1:.0f}':>17}", flush=True)
        if graphs_note(engine):
            print(f"# {name}: {graphs_note(engine)}")
        del engine
        release(args.device)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m defvos_core.benchmarks.compare_deaot",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="defvos weights (default: shipped)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fp16", action="store_true", help="defvos fp16, official autocast")
    parser.add_argument("--sizes", default="240,480", help="short sides, comma list")
    parser.add_argument("--objects", default="1,5,10", help="object counts, comma list")
    parser.add_argument("--frames", type=int, default=200, help="timed frames per median")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--long", type=int, default=1000, help="long-run frames (0: none)")
    parser.add_argument("--long-size", type=int, default=None, help="default: largest size")
    parser.add_argument("--long-objects", type=int, default=5)
    parser.add_argument("--long-engines", default=None, help="default: --engines")
    parser.add_argument("--engines", default=None,
                        help="comma list of defvos, defvos-graphs, DeAOT-T, AOT-T (default: "
                             "all; defvos-graphs on CUDA only)")
    parser.add_argument("--official-gap", type=int, default=5,
                        help="official engines: a long-term memory frame every N frames")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.objects = [int(c) for c in args.objects.split(",")]
    args.long_size = args.long_size or max(args.sizes)
    if args.long and args.long < args.warmup + 8:
        parser.error(f"--long {args.long} is too short for --warmup {args.warmup}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # the official code calls torch.meshgrid without `indexing` (a warning per model build)
    warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    default = ["defvos"] + (["defvos-graphs"] if cuda else []) + list(PEERS)
    engines = args.engines.split(",") if args.engines else default
    long_engines = args.long_engines.split(",") if args.long_engines else []
    unknown = sorted(set(engines + long_engines) - set(OURS) - set(PEERS))
    if unknown or not set(engines) & set(OURS):
        raise SystemExit(f"--engines: unknown {unknown} or no defvos engine in {engines}")
    missing = peer_unavailable()
    if missing and set(engines) & set(PEERS):
        print(f"official engines skipped: {missing}")
        engines = [name for name in engines if name in OURS]
    long_engines = [name for name in long_engines or engines
                    if name in OURS or not missing]
    device_name = (torch.cuda.get_device_name() if cuda else
                   f"{platform.processor() or platform.machine()} CPU, "
                   f"{torch.get_num_threads()} threads")
    print(f"defvos vs official AOT/DeAOT: device={args.device} ({device_name}) "
          f"precision={'fp16' if args.fp16 else 'fp32'} torch={torch.__version__}")
    print(f"engines: {', '.join(engines)}; median over {args.frames} frames after "
          f"{args.warmup} warm-up; host uint8 frame in -> host uint8 label map out")
    if set(engines) & set(PEERS):
        print(f"official engines: random weights, long-term memory every {args.official_gap} "
              f"frames (never dropped), short-term attention: {short_term_path()}")
    compare(args, engines)
    if args.long:
        long_run(args, long_engines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
