"""Export the student as ONNX graphs for onnxruntime (CPU, CUDA, TensorRT / Jetson).

    python -m defvos_core.export --weights student.pt --out onnx/ --size 480x640 [--fp16]

--size is the camera frame size (H x W). The graphs are for the padded processing size the
tracker computes from it (short side --short-side, padded to a multiple of 16); the number of
memory frames and of identity banks stay dynamic. Writes encoder.onnx, identity.onnx,
segment.onnx and metadata.json into --out.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from defvos_core.config import TrackerConfig

PROG = "python -m defvos_core.export"


def parse_size(text: str) -> tuple[int, int]:
    """'240x427' -> (240, 427); ValueError naming the expected form otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not match or int(match.group(1)) <= 0 or int(match.group(2)) <= 0:
        raise ValueError(f"--size {text!r}: expected the camera frame size as HEIGHTxWIDTH in "
                         "pixels, e.g. 480x640")
    return int(match.group(1)), int(match.group(2))


def parse_short_side(text: str) -> int | None:
    """'240' -> 240; 'none' -> None (process at the input size)."""
    if text.strip().lower() in ("none", "full", "0"):
        return None
    if not text.strip().isdigit() or int(text) < 16:
        raise ValueError(f"--short-side {text!r}: expected a pixel count >= 16, or 'none'")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None,
                        help="weights file (default: the shipped student)")
    parser.add_argument("--out", required=True, help="output folder for the graphs")
    parser.add_argument("--size", default="240x427",
                        help="camera frame size HEIGHTxWIDTH (default 240x427)")
    parser.add_argument("--short-side", default=str(TrackerConfig().size),
                        help="processing short side in pixels, or 'none' (default: the "
                             "tracker's, %(default)s)")
    parser.add_argument("--fp16", action="store_true",
                        help="half-precision weights and compute (inputs/outputs stay float32)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip onnx.checker and shape inference")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        height, width = parse_size(args.size)
        short_side = parse_short_side(args.short_side)
        from defvos_core.inference.preprocess import FrameGeometry
        from defvos_core.model.checkpoint import load_model, resolve_weights
        from defvos_core.onnx.graphs import OPSET, export_graphs

        weights = resolve_weights(args.weights)
        geometry = FrameGeometry.for_input(height, width, short_side,
                                           TrackerConfig().max_long_side)
        model = load_model(weights)
        metadata = export_graphs(model, Path(args.out), geometry.padded, fp16=args.fp16,
                                 input_size=(height, width), resized_size=geometry.resized,
                                 short_side=short_side, weights_path=weights,
                                 opset=args.opset or OPSET, check=not args.no_check)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"{PROG}: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    padded = metadata["padded_size"]
    print(f"wrote {', '.join(metadata['graphs'].values())} and metadata.json to {args.out} "
          f"(camera {height}x{width} -> padded {padded[0]}x{padded[1]}, "
          f"{metadata['precision']}, opset {metadata['opset']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
