"""Frames from a video file, decoded by OpenCV (the ``video`` extra).

:func:`read_frames` yields the selected frames as RGB arrays; :func:`extract_frames` writes
them as ``frame_000123.png`` (or ``.jpg``), named by their index in the video, each written
atomically (a temp file, then a rename), so a run cut short never leaves a half-written
image behind. OpenCV is imported when a video is opened, not with this module.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edge_service.errors import BadInputError, BuildError
from edge_service.fsutil import atomic_write_bytes

if TYPE_CHECKING:
    from types import ModuleType

log = logging.getLogger(__name__)
ImageFormat = Literal["png", "jpg"]
FORMATS: tuple[ImageFormat, ...] = ("png", "jpg")
JPEG_QUALITY = 95


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as exc:
        raise BuildError(
            "reading video needs OpenCV: pip install 'edge-service[video]' "
            "(or pip install opencv-python-headless)"
        ) from exc
    return cv2


def _check_selection(every: int, limit: int | None, start: int) -> None:
    if every < 1:
        raise BadInputError(f"every must be >= 1 (1 keeps every frame), got {every}")
    if limit is not None and limit < 1:
        raise BadInputError(f"limit must be >= 1 (or None for no limit), got {limit}")
    if start < 0:
        raise BadInputError(f"start must be >= 0 (the first frame is 0), got {start}")


def _open(cv2: ModuleType, video: Path) -> Any:
    if not video.exists():
        raise BadInputError(f"video {video} does not exist; check the path")
    if not video.is_file():
        raise BadInputError(f"video {video} is not a file; pass a video file such as an .avi")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        cap.release()
        raise BadInputError(
            f"OpenCV cannot open {video} as a video: the file is damaged or its container "
            "or codec is not supported by this OpenCV build; convert it to MP4 (H.264) or "
            "MJPG AVI and try again"
        )
    return cap


def frame_count(video: Path) -> int:
    """The number of frames the container declares (0 when it does not say)."""
    cv2 = _cv2()
    cap = _open(cv2, video)
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        cap.release()


def read_frames(
    video: Path, every: int = 1, limit: int | None = None, start: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, rgb)`` for frames ``start``, ``start + every``, ... of ``video``.

    ``rgb`` is an (H, W, 3) uint8 array in RGB order; at most ``limit`` frames are yielded.
    Frames are decoded in order from the first (no seeking, which is inexact for many
    codecs), so ``index`` is the frame's true position in the stream. BadInputError when
    the file cannot be opened or has no frame at or after ``start``.
    """
    _check_selection(every, limit, start)
    cv2 = _cv2()
    cap = _open(cv2, video)
    index = -1
    yielded = 0
    try:
        while limit is None or yielded < limit:
            if not cap.grab():
                break
            index += 1
            if index < start or (index - start) % every:
                continue
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                raise BadInputError(
                    f"OpenCV could not decode frame {index} of {video}; the file may be "
                    "damaged: re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4)"
                )
            yield index, _to_rgb(cv2, bgr)
            yielded += 1
    finally:
        cap.release()
    if yielded == 0:
        if index < 0:
            raise BadInputError(
                f"OpenCV opened {video} but decoded no frame from it; the file is empty, "
                "damaged or in a codec this build cannot decode: re-encode it to MP4 (H.264)"
            )
        raise BadInputError(
            f"{video} has {index + 1} frames, none at or after start={start}; "
            f"lower --start below {index + 1}"
        )


def _to_rgb(cv2: ModuleType, frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    elif frame.shape[2] == 4:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def encode_image(rgb: np.ndarray, fmt: ImageFormat) -> bytes:
    """PNG (lossless) or JPEG (quality 95) bytes of an (H, W, 3) uint8 RGB image."""
    from PIL import Image

    if fmt not in FORMATS:
        raise BadInputError(f"image format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise BadInputError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if fmt == "png":
        img.save(buf, "PNG", compress_level=1)
    else:
        img.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def extract_frames(
    video: Path,
    out_dir: Path,
    every: int = 1,
    limit: int | None = None,
    start: int = 0,
    fmt: ImageFormat = "png",
) -> list[Path]:
    """Write frames ``start``, ``start + every``, ... of ``video`` into ``out_dir``.

    Each becomes ``frame_<index:06d>.<fmt>`` (``index``: its position in the video), RGB,
    written atomically; at most ``limit`` frames. Returns the paths in order. Existing
    files of the same name are replaced.
    """
    if fmt not in FORMATS:
        raise BadInputError(f"image format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    _check_selection(every, limit, start)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"--out {out_dir} is a file; name a folder to write frames into")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for index, rgb in read_frames(video, every=every, limit=limit, start=start):
        path = out_dir / f"frame_{index:06d}.{fmt}"
        atomic_write_bytes(path, encode_image(rgb, fmt))
        written.append(path)
    log.debug("wrote %d frames of %s to %s", len(written), video, out_dir)
    return written
