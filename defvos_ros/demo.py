"""End-to-end demo over DDS: player -> defvos node -> recorder, on the shipped sample clip.

    python -m defvos_ros.demo --out demo_out [--size 240] [--rate 0] [--frames N]
        [--threads 2] [--weights PATH] [--backend torch|onnxruntime] [--bag] [--domain-id D]

The node runs as its own process (``python -m defvos_ros``, as on a robot); a player and a
recorder run in this process and talk to it over DDS only. The player publishes the clip's
frames and the first-frame ground truth as the seed; the recorder writes
``OUT/overlay.mp4`` (the node's ~/overlay), ``OUT/masks/*.png`` and, with ``--bag``, the
masks as a rosbag2. The received masks are then scored against the clip's ground truth
(DAVIS J&F; J is the IoU) and the figures are printed and written to ``OUT/scores.json``.

``--rate 0`` (default) plays in lockstep, each frame after the previous mask, so every frame
is segmented; ``--rate R`` plays at R fps like a camera, and the node drops the frames it
cannot keep up with: a dropped frame is scored with the last mask received before it (what
a consumer of the stream would hold).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor

from defvos_core.config import BACKENDS, TrackerConfig
from defvos_core.data.masks import read_label_map
from defvos_core.data.video_io import iter_video_frames
from defvos_core.evaluation.metrics import evaluate_sequence, summarize
from defvos_ros.play import Player
from defvos_ros.recorder import Recorder
from defvos_ros.ros_helpers import spin_in_thread

SAMPLE = Path(__file__).resolve().parents[1] / 'defvos_core' / 'assets' / 'sample' / 'bear'


def build_parser() -> argparse.ArgumentParser:
    """Return the command line of ``python -m defvos_ros.demo``."""
    parser = argparse.ArgumentParser(prog='python -m defvos_ros.demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder (created)')
    parser.add_argument('--clip', default=str(SAMPLE),
                        help='clip folder with frames/ and masks/ (default: the sample)')
    parser.add_argument('--frames', type=int, default=0, help='first N frames only (>= 3)')
    parser.add_argument('--size', type=int, default=TrackerConfig.size,
                        help='processing size of the node')
    parser.add_argument('--rate', type=float, default=0.0,
                        help='player fps; 0 = lockstep (every frame segmented)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads of the node')
    parser.add_argument('--weights', default='', help='weights file (default: shipped)')
    parser.add_argument('--backend', default=TrackerConfig.backend, choices=BACKENDS)
    parser.add_argument('--bag', action='store_true', help='also record OUT/masks_bag')
    parser.add_argument('--domain-id', type=int,
                        help='ROS_DOMAIN_ID for the demo (default: the environment\'s)')
    parser.add_argument('--startup-timeout', type=float, default=120.0)
    return parser


def start_node_process(parameters: dict, log_path: Path) -> subprocess.Popen:
    """Start ``python -m defvos_ros`` with ``-p name:=value`` parameters, logging to a file."""
    command = [sys.executable, '-m', 'defvos_ros', '--ros-args']
    for name, value in parameters.items():
        command += ['-p', f'{name}:={value}']
    with open(log_path, 'w') as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ.copy())


def stop_node_process(process: subprocess.Popen) -> int:
    """Stop a node process with SIGINT (as Ctrl-C would), killing it after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _wait_ready(player: Player, recorder: Recorder, process: subprocess.Popen,
                timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if (player.wait_for_subscribers(0.2)
                and recorder.count_publishers(recorder.overlay_sub.topic_name) > 0
                and recorder.count_publishers(recorder.masks_sub.topic_name) > 0):
            time.sleep(0.5)  # let the node discover the recorder's subscriptions too
            return True
    return False


def score(predictions: list[Optional[np.ndarray]], ground_truth: list[np.ndarray]) -> dict:
    """DAVIS J&F of a mask stream; a missing mask holds the previous one (seed for frame 0)."""
    held, filled = ground_truth[0], []
    for mask in predictions:
        held = held if mask is None else mask
        filled.append(held)
    return summarize({'clip': evaluate_sequence(filled, ground_truth)})


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the process exit code."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = Path(args.clip)
    frames = list(iter_video_frames(clip / 'frames'))
    ground_truth = [read_label_map(p) for p in sorted((clip / 'masks').glob('*.png'))]
    count = min(len(frames), len(ground_truth))
    if args.frames:
        count = min(count, max(3, args.frames))
    frames, ground_truth = frames[:count], ground_truth[:count]
    if args.domain_id is not None:
        os.environ['ROS_DOMAIN_ID'] = str(args.domain_id)
    domain = os.environ.get('ROS_DOMAIN_ID', '0')
    print(f'defvos demo: {count} frames of {clip.name}, node size {args.size}, '
          f"{'lockstep' if args.rate <= 0 else f'{args.rate:g} fps'}, ROS_DOMAIN_ID {domain}")

    parameters = {'size': args.size, 'num_threads': args.threads, 'backend': args.backend,
                  'summary_period_sec': 5.0}
    if args.weights:
        parameters['weights'] = args.weights
    process = start_node_process(parameters, out / 'node.log')
    rclpy.init()
    lockstep = args.rate <= 0
    player = Player(wait_for='defvos/masks' if lockstep else None, frame_id='camera')
    bag = out / 'masks_bag' if args.bag else None
    if bag is not None and bag.exists():
        import shutil

        shutil.rmtree(bag)
    recorder = Recorder(out, bag=bag, fps=10, save_masks=True, keep_masks=True)
    executor = SingleThreadedExecutor()
    executor.add_node(player)
    executor.add_node(recorder)
    thread = spin_in_thread(executor)
    started = time.monotonic()
    try:
        if not _wait_ready(player, recorder, process, args.startup_timeout):
            print(f'the node did not come up (exit code {process.poll()}); its log:\n'
                  + (out / 'node.log').read_text(), file=sys.stderr)
            return 1
        print(f'node ready after {time.monotonic() - started:.1f} s; playing')
        started = time.monotonic()
        missing = player.play(frames, seed=ground_truth[0], rate=args.rate)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (
                recorder.overlays_received < recorder.masks_received or not lockstep):
            time.sleep(0.1)
            if not lockstep and time.monotonic() - recorder.last_message_time > 1.0:
                break
        elapsed = time.monotonic() - started
    finally:
        executor.shutdown()
        written = recorder.close()
        player.destroy_node()
        recorder.destroy_node()
        rclpy.try_shutdown()
        thread.join(timeout=5.0)
        exit_code = stop_node_process(process)

    by_stamp = recorder.masks
    predictions = [by_stamp.get(stamp) for _, stamp in player.sent]
    received = sum(mask is not None for mask in predictions)
    summary = score(predictions, ground_truth)
    result = {
        'frames': count, 'masks_received': received, 'missing_in_lockstep': missing,
        'seconds': elapsed, 'J&F': summary['J&F-Mean'], 'J (IoU)': summary['J-Mean'],
        'F': summary['F-Mean'], 'video': str(written['video']),
        'masks_dir': str(written['masks_dir']), 'bag': str(written['bag']),
        'node_exit_code': exit_code,
    }
    (out / 'scores.json').write_text(json.dumps(result, indent=2) + '\n')
    print(f'masks received for {received}/{count} frames in {elapsed:.1f} s '
          f'({received / max(elapsed, 1e-9):.1f} masks/s)')
    print(f"J&F {result['J&F']:.3f}  J (mean IoU) {result['J (IoU)']:.3f}  "
          f"F {result['F']:.3f}   (frames 1..{count - 2} scored, DAVIS protocol)")
    print(f"overlay video: {result['video']}  ({recorder.overlays_received} frames)")
    print(f"masks: {result['masks_dir']}" + (f"  bag: {result['bag']}" if bag else ''))
    print(f"node log: {out / 'node.log'}  scores: {out / 'scores.json'}")
    return 0 if written['video'] is not None and received else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m defvos_ros.demo``."""
    return run(build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
