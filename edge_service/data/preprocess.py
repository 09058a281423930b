"""The one preprocessing path: bytes -> grayscale uint8 -> resize -> normalised float32.

Training, calibration and serving all call :func:`preprocess` (serving and calibration
after :func:`decode_image`), so an image is turned into the same tensor whichever path
it takes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge_service.errors import BadInputError

_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}
# What a damaged file can make PIL raise while opening or decoding it: EOFError is its
# end-of-data error (multi-frame files); fuzzing (tests/reliability) found DDS headers with
# an unknown pixel format raising NotImplementedError (decode_rgb opens any format).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    NotImplementedError,
)


@dataclass(frozen=True)
class InputSpec:
    """What an engine expects: one grayscale NCHW tensor of ``size`` x ``size``."""

    name: str = "input"
    size: int = 28
    mean: float = 0.2860
    std: float = 0.3530


def sniff_format(data: bytes) -> str:
    """``png``, ``jpeg`` or ``raw``, from the payload's first bytes."""
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return fmt
    return "raw"


def decode_image(
    data: bytes,
    *,
    width: int | None = None,
    height: int | None = None,
    max_pixels: int = 16_000_000,
) -> np.ndarray:
    """Decode a JPEG, PNG or raw 8-bit grayscale payload to an (H, W) uint8 array.

    A raw payload needs ``width`` and ``height`` unless it is square (e.g. 784 bytes is 28x28).
    Colour images are converted to luminance (ITU-R 601-2, as PIL's ``L`` mode).
    """
    if not data:
        raise BadInputError("the request body is empty; send a JPEG, PNG or raw 8-bit frame")
    if sniff_format(data) == "raw":
        return _decode_raw(data, width, height)
    with open_image(data, max_pixels=max_pixels, formats=("PNG", "JPEG")) as img:
        img.draft("L", (img.width, img.height))  # JPEG: decode straight to grayscale
        return np.asarray(img.convert("L"), dtype=np.uint8)


@contextmanager
def open_image(
    data: bytes, *, max_pixels: int, formats: tuple[str, ...] | None = None
) -> Iterator[Image.Image]:
    """Open an encoded image whose size is at most ``max_pixels``, for decoding in the body.

    The size is checked from the header, before a pixel is decoded, so a small file that
    declares a huge image (a decompression bomb) is refused without allocating it. PIL's
    own bomb check (an error, or a warning turned into one) and every decoding failure in
    the body become BadInputError.
    """
    try:
        with Image.open(io.BytesIO(data), formats=formats) as img:
            if img.width * img.height > max_pixels:
                raise BadInputError(
                    f"image is {img.width}x{img.height}, more than {max_pixels} pixels; "
                    "send a smaller frame"
                )
            yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadInputError(
            f"image declares more than {max_pixels} pixels (a decompression bomb?): {exc}"
        ) from exc
    except _DECODE_ERRORS as exc:
        raise BadInputError(f"cannot decode the image (send a JPEG or PNG): {exc}") from exc


def _decode_raw(data: bytes, width: int | None, height: int | None) -> np.ndarray:
    if width is None and height is None:
        side = math.isqrt(len(data))
        if side * side != len(data):
            raise BadInputError(
                f"raw payload of {len(data)} bytes is not square and not a JPEG/PNG; "
                "give width and height (query ?width=&height=) for raw 8-bit frames"
            )
        width = height = side
    if width is None or height is None or width <= 0 or height <= 0:
        raise BadInputError("raw frames need both width and height, each > 0")
    if width * height != len(data):
        raise BadInputError(
            f"raw payload has {len(data)} bytes, but {width}x{height} needs {width * height}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width)


def resize(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W) uint8 image to ``size`` x ``size`` (bilinear; identity if equal)."""
    if gray.shape == (size, size):
        return gray
    img = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def preprocess(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Turn (H, W) or (N, H, W) uint8 images into an (N, 1, size, size) float32 batch."""
    batch = images[None] if images.ndim == 2 else images
    if batch.ndim != 3 or batch.dtype != np.uint8:
        raise BadInputError(
            f"expected (H, W) or (N, H, W) uint8 images, got {images.shape} {images.dtype}"
        )
    if batch.shape[1:] != (spec.size, spec.size):
        batch = np.stack([resize(img, spec.size) for img in batch])
    out = (batch.astype(np.float32) / 255.0 - spec.mean) / spec.std
    return out[:, None, :, :].astype(np.float32, copy=False)


def preprocess_bytes(
    data: bytes,
    spec: InputSpec,
    *,
    width: int | None = None,
    height: int | None = None,
    max_pixels: int = 16_000_000,
) -> np.ndarray:
    """Decode one payload and preprocess it into a (1, 1, size, size) batch."""
    gray = decode_image(data, width=width, height=height, max_pixels=max_pixels)
    return preprocess(gray, spec)
