"""Video sequences on disk: DAVIS, YouTube-VOS and unlabeled footage as `VideoSequence`s."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from defvos_core.data.masks import read_label_map
from defvos_core.data.video_io import iter_video_frames, list_frame_files, read_rgb

#: Where `read_unlabeled` decodes video files unless told otherwise (env var overrides).
DEFAULT_DECODE_CACHE = Path(os.environ.get(
    "DEFVOS_FRAME_CACHE", Path.home() / ".cache" / "defvos" / "decoded_frames"))


@dataclass
class VideoSequence:
    """One video: its frames in order and the annotated ones.

    `mask_paths` maps a frame index (position in `frame_paths`) to its label-map PNG; it
    is dense for DAVIS, sparse for YouTube-VOS and empty for unlabeled footage.
    `object_ids` lists the object ids the dataset declares (YouTube-VOS meta.json); empty
    when only the masks say which objects exist.
    """

    name: str
    frame_paths: list[Path]
    mask_paths: dict[int, Path] = field(default_factory=dict)
    object_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    @property
    def labeled_indices(self) -> list[int]:
        """Sorted indices of the frames that have a label map."""
        return sorted(self.mask_paths)

    @property
    def is_labeled(self) -> bool:
        return bool(self.mask_paths)

    def has_mask(self, index: int) -> bool:
        return index in self.mask_paths

    def frame_stem(self, index: int) -> str:
        return self.frame_paths[index].stem

    def load_frame(self, index: int) -> np.ndarray:
        """Frame `index` as (H, W, 3) uint8 RGB."""
        return read_rgb(self.frame_paths[index])

    def load_label_map(self, index: int) -> np.ndarray:
        """Label map of frame `index` as (H, W) uint8 (0 bg, k object k, 255 void)."""
        if index not in self.mask_paths:
            raise KeyError(f"sequence {self.name!r}: frame {index} "
                           f"({self.frame_paths[index].name}) has no annotation")
        return read_label_map(self.mask_paths[index])


def _read_split_file(candidates: list[Path]) -> list[str]:
    for candidate in candidates:
        if candidate.is_file():
            names = [line.strip() for line in candidate.read_text().splitlines()]
            return [name for name in names if name]
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no split file found; tried {tried}")


def _sequence_from_dirs(name: str, frame_dir: Path, mask_dir: Path | None) -> VideoSequence:
    """Frames of `frame_dir`; masks are the PNGs of `mask_dir` whose stem matches a frame."""
    frame_paths = list_frame_files(frame_dir)
    if not frame_paths:
        raise ValueError(f"{frame_dir}: sequence {name!r} has no frames")
    mask_paths: dict[int, Path] = {}
    if mask_dir is not None and mask_dir.is_dir():
        index_of_stem = {path.stem: index for index, path in enumerate(frame_paths)}
        for mask_path in sorted(mask_dir.glob("*.png")):
            if mask_path.stem not in index_of_stem:
                raise ValueError(f"{mask_path}: annotation has no matching frame in {frame_dir}")
            mask_paths[index_of_stem[mask_path.stem]] = mask_path
    return VideoSequence(name, frame_paths, mask_paths)


def read_davis(root: str | Path, split: str = "train", resolution: str = "240p",
               sequences: Iterable[str] | None = None) -> list[VideoSequence]:
    """DAVIS (2017 layout): `JPEGImages/<res>/<seq>`, `Annotations/<res>/<seq>`.

    Sequence names come from `ImageSets/<split>.txt`, else `ImageSets/2017/<split>.txt`;
    `sequences` restricts to the given names (each must be in the split). Label maps must
    be palette PNGs with object indices (original DAVIS-2016 0/255 masks would read as void).
    """
    root = Path(root)
    names = _read_split_file([root / "ImageSets" / f"{split}.txt",
                              root / "ImageSets" / "2017" / f"{split}.txt"])
    if sequences is not None:
        wanted = set(sequences)
        unknown = sorted(wanted - set(names))
        if unknown:
            raise ValueError(f"{root}: sequences {unknown} are not in split {split!r}")
        names = [name for name in names if name in wanted]
    result = []
    for name in names:
        frame_dir = root / "JPEGImages" / resolution / name
        if not frame_dir.is_dir():
            raise FileNotFoundError(f"{frame_dir}: frames of DAVIS sequence {name!r} missing "
                                    f"(resolution {resolution!r})")
        result.append(_sequence_from_dirs(name, frame_dir,
                                          root / "Annotations" / resolution / name))
    return result


def read_youtube_vos(root: str | Path, split: str = "train") -> list[VideoSequence]:
    """YouTube-VOS: `<split>/JPEGImages/<vid>/*.jpg`, sparse `<split>/Annotations/<vid>/*.png`.

    The videos and their object ids come from `<split>/meta.json`
    ({"videos": {vid: {"objects": {"1": {"category": ..., "frames": [...]}}}}});
    annotations are whatever PNGs exist.
    """
    split_dir = Path(root) / split
    meta_path = split_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: YouTube-VOS meta.json missing")
    try:
        videos = json.loads(meta_path.read_text())["videos"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{meta_path}: expected {{'videos': {{...}}}} ({error})") from error
    result = []
    for name in sorted(videos):
        frame_dir = split_dir / "JPEGImages" / name
        if not frame_dir.is_dir():
            raise FileNotFoundError(f"{frame_dir}: frames of video {name!r} listed in "
                                    f"{meta_path} are missing")
        sequence = _sequence_from_dirs(name, frame_dir, split_dir / "Annotations" / name)
        sequence.object_ids = sorted(int(key) for key in videos[name].get("objects", {}))
        result.append(sequence)
    return result


def _decode_to_cache(video_path: Path, cache_dir: Path) -> Path:
    """Decode `video_path` once into `cache_dir/<stem>-<hash>/NNNNN.jpg`; reuse if complete."""
    stat = video_path.stat()
    key = f"{video_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    target = cache_dir / f"{video_path.stem}-{digest}"
    if (target / ".complete").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{video_path.stem}-", dir=cache_dir))
    try:
        for stem, rgb in iter_video_frames(video_path):
            cv2.imwrite(str(staging / f"{stem}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
        (staging / ".complete").touch()
        try:
            staging.rename(target)
        except OSError:  # another process finished first, or a stale partial copy exists
            if not (target / ".complete").is_file():
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_unlabeled(path_or_dir: str | Path, cache_dir: str | Path | None = None) -> VideoSequence:
    """Read an unlabeled sequence from a folder of frames or a video file (no masks).

    A video is decoded once into JPEGs (quality 95) under
    `cache_dir/<video stem>-<hash of path, size, mtime>/`; `cache_dir` defaults to
    `$DEFVOS_FRAME_CACHE` or `~/.cache/defvos/decoded_frames`. A later call reuses them.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        frame_paths = list_frame_files(path)
        if not frame_paths:
            raise ValueError(f"{path}: directory holds no .jpg/.jpeg/.png frames")
        return VideoSequence(path.name, frame_paths, {})
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file or frame directory")
    frame_dir = _decode_to_cache(path, Path(cache_dir) if cache_dir else DEFAULT_DECODE_CACHE)
    return VideoSequence(path.stem, list_frame_files(frame_dir), {})


def split_holdout(sequences: list[VideoSequence], holdout_names: Iterable[str]
                  ) -> tuple[list[VideoSequence], list[VideoSequence]]:
    """(training, held-out) sequences, keeping order; every held-out name must exist."""
    holdout = set(holdout_names)
    unknown = sorted(holdout - {sequence.name for sequence in sequences})
    if unknown:
        raise ValueError(f"holdout names {unknown} are not among the sequences")
    return ([s for s in sequences if s.name not in holdout],
            [s for s in sequences if s.name in holdout])
