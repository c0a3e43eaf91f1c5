"""Frames in and out: folders of images, video files, and an .mp4 writer.

Every frame handed around is an (H, W, 3) uint8 RGB array.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import TracebackType
from typing import Iterator

import cv2
import numpy as np

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def _natural_key(path: Path) -> tuple:
    """Sort key: by name, with digit runs compared as numbers ("2" before "10")."""
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts)


def list_frame_files(directory: str | Path) -> list[Path]:
    """List the .jpg/.jpeg/.png files of `directory`, sorted by name (digit runs numerically)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory of frames")
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    return sorted(files, key=_natural_key)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; ValueError naming the file if unreadable."""
    path = Path(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        reason = "file does not exist" if not path.exists() else "not a readable image"
        raise ValueError(f"{path}: cannot read image ({reason})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _open_capture(path: Path) -> cv2.VideoCapture:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file or frame directory")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise ValueError(f"{path}: cannot open as a video (corrupt or unsupported format)")
    return capture


def iter_video_frames(path_or_dir: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (frame_stem, rgb (H, W, 3) uint8) from a folder of frames or a video file.

    Folder frames keep their file stems; video frames are named "00000", "00001", ...
    Raises when the folder has no frames or the video cannot be opened or decodes nothing.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise ValueError(f"{path}: directory holds no .jpg/.jpeg/.png frames")
        for file in files:
            yield file.stem, read_rgb(file)
        return
    capture = _open_capture(path)
    count = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield f"{count:05d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise ValueError(f"{path}: video opened but no frame could be decoded")


def count_frames(path_or_dir: str | Path) -> int | None:
    """Count the frames of a folder or video; None when the container does not say."""
    path = Path(path_or_dir)
    if path.is_dir():
        return len(list_frame_files(path))
    capture = _open_capture(path)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return count if count > 0 else None


class VideoWriter:
    """Write RGB frames to an .mp4 (H.264 via imageio-ffmpeg; OpenCV 'mp4v' as fallback).

    The size is fixed by the first frame; odd sizes are padded to even by repeating the
    last row/column (H.264 with yuv420p needs even sizes). Use as a context manager::

        with VideoWriter("out.mp4", fps=12) as writer:
            writer.write(frame_rgb)  # (H, W, 3) uint8
    """

    def __init__(self, path: str | Path, fps: float = 24.0, quality: int = 8) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.quality = quality
        self.backend: str | None = None  # "imageio-ffmpeg" or "opencv" once opened
        self.frame_size: tuple[int, int] | None = None  # (H, W) as given, before padding
        self.frames_written = 0
        self._imageio_writer = None
        self._cv2_writer: cv2.VideoWriter | None = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    @staticmethod
    def _pad_even(frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        pad_bottom, pad_right = height % 2, width % 2
        if pad_bottom or pad_right:
            frame = cv2.copyMakeBorder(frame, 0, pad_bottom, 0, pad_right, cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(frame)

    def _open(self, first_frame: np.ndarray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import imageio.v2 as imageio

            writer = imageio.get_writer(
                str(self.path), format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                quality=self.quality, pixelformat="yuv420p", macro_block_size=1,
                ffmpeg_log_level="error")
            writer.append_data(first_frame)  # ffmpeg starts here: failures surface now
            self._imageio_writer, self.backend = writer, "imageio-ffmpeg"
            return
        except Exception:  # noqa: BLE001 - any imageio/ffmpeg failure means: use OpenCV
            self._imageio_writer = None
        height, width = first_frame.shape[:2]
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                 (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"{self.path}: neither imageio-ffmpeg (libx264) nor OpenCV "
                               "(mp4v) could open a video writer")
        writer.write(cv2.cvtColor(first_frame, cv2.COLOR_RGB2BGR))
        self._cv2_writer, self.backend = writer, "opencv"

    def write(self, frame_rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame; every frame must have the first one's size."""
        if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
            raise ValueError(f"{self.path}: expected an (H, W, 3) RGB frame, got {frame_rgb.shape}")
        frame_rgb = np.asarray(frame_rgb, dtype=np.uint8)
        if self.frame_size is None:
            self.frame_size = frame_rgb.shape[:2]
            self._open(self._pad_even(frame_rgb))
        else:
            if frame_rgb.shape[:2] != self.frame_size:
                raise ValueError(f"{self.path}: frame size {frame_rgb.shape[:2]} differs from "
                                 f"the first frame's {self.frame_size}")
            padded = self._pad_even(frame_rgb)
            if self._imageio_writer is not None:
                self._imageio_writer.append_data(padded)
            elif self._cv2_writer is not None:
                self._cv2_writer.write(cv2.cvtColor(padded, cv2.COLOR_RGB2BGR))
            else:
                raise ValueError(f"{self.path}: writer is closed")
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (idempotent)."""
        if self._imageio_writer is not None:
            self._imageio_writer.close()
            self._imageio_writer = None
        if self._cv2_writer is not None:
            self._cv2_writer.release()
            self._cv2_writer = None
