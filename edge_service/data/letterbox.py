"""The detection preprocessing path: bytes -> RGB uint8 -> letterbox -> NCHW float32.

Detection models (YOLO family) take colour input resized with its aspect ratio kept and
padded to a square, as Ultralytics' ``LetterBox`` does; classification keeps the grayscale
path of :mod:`edge_service.data.preprocess`. The :class:`Letterbox` returned alongside the
image maps boxes predicted on the padded square back to the original frame.

PIL's bilinear filter antialiases when it shrinks, unlike OpenCV's ``INTER_LINEAR`` used by
Ultralytics, so pixels differ slightly from an OpenCV pipeline; geometry is identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from edge_service.data.preprocess import open_image
from edge_service.errors import BadInputError


@dataclass(frozen=True)
class Letterbox:
    """How an ``orig_w`` x ``orig_h`` image was placed on a ``size`` x ``size`` square.

    A point ``(x, y)`` of the original lands at ``(x * scale + pad_x, y * scale + pad_y)``.
    """

    scale: float
    pad_x: int
    pad_y: int
    size: int
    orig_w: int
    orig_h: int

    def map(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) boxes in original pixels -> the same boxes on the letterboxed square."""
        boxes = _as_boxes(boxes_xyxy)
        mapped: np.ndarray = boxes * self.scale + self._offset()
        return mapped

    def unmap(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) boxes on the letterboxed square -> original pixels, clipped to the image."""
        boxes = (_as_boxes(boxes_xyxy) - self._offset()) / self.scale
        limits = np.array([self.orig_w, self.orig_h, self.orig_w, self.orig_h], np.float64)
        clipped: np.ndarray = np.clip(boxes, 0.0, limits)
        return clipped

    def _offset(self) -> np.ndarray:
        return np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float64)


def _as_boxes(boxes_xyxy: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BadInputError(f"boxes must be (N, 4) x1, y1, x2, y2; got shape {boxes.shape}")
    return boxes


def decode_rgb(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode a JPEG, PNG (or any format PIL reads) payload to an (H, W, 3) uint8 array.

    Grayscale, palette and alpha images are converted to RGB (alpha is dropped).
    """
    if not data:
        raise BadInputError("the request body is empty; send a JPEG or PNG frame")
    with open_image(data, max_pixels=max_pixels) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise BadInputError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise BadInputError(f"image has no pixels: shape {rgb.shape}")


def fit(orig_w: int, orig_h: int, size: int) -> Letterbox:
    """The placement of an ``orig_w`` x ``orig_h`` image on a ``size`` square, centred.

    Same arithmetic as Ultralytics: scale by ``min(size / h, size / w)`` (up or down), round
    the new size, split the padding in two with the odd pixel going bottom / right.
    """
    if size <= 0:
        raise BadInputError(f"letterbox size must be > 0, got {size}")
    scale = min(size / orig_h, size / orig_w)
    new_w, new_h = _scaled(orig_w, orig_h, scale)
    pad_x = round((size - new_w) / 2 - 0.1)
    pad_y = round((size - new_h) / 2 - 0.1)
    return Letterbox(scale, pad_x, pad_y, size, orig_w, orig_h)


def _scaled(orig_w: int, orig_h: int, scale: float) -> tuple[int, int]:
    # At least one pixel, so extreme aspect ratios still resize.
    return max(1, round(orig_w * scale)), max(1, round(orig_h * scale))


def letterbox(rgb: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize an (H, W, 3) uint8 image into a ``size`` x ``size`` square, aspect kept.

    The image is resized bilinearly and centred on a ``pad_value`` grey canvas
    (114, as Ultralytics). Returns the square and the :class:`Letterbox` that undoes it.
    """
    _check_rgb(rgb)
    if not 0 <= pad_value <= 255:
        raise BadInputError(f"pad_value must be in 0..255, got {pad_value}")
    orig_h, orig_w = rgb.shape[:2]
    box = fit(orig_w, orig_h, size)
    new_w, new_h = _scaled(orig_w, orig_h, box.scale)
    resized = rgb
    if (new_w, new_h) != (orig_w, orig_h):
        img = Image.fromarray(np.ascontiguousarray(rgb))
        resized = np.asarray(img.resize((new_w, new_h), Image.Resampling.BILINEAR), np.uint8)
    canvas = np.full((size, size, 3), pad_value, dtype=np.uint8)
    canvas[box.pad_y : box.pad_y + new_h, box.pad_x : box.pad_x + new_w] = resized
    return canvas, box


def to_tensor(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) contiguous float32 in 0..1 (RGB channel order)."""
    _check_rgb(img)
    out = np.empty((1, 3, *img.shape[:2]), dtype=np.float32)
    np.multiply(img.transpose(2, 0, 1), np.float32(1 / 255), out=out[0])  # one pass
    return out
