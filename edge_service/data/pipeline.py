"""From a request's bytes to an engine's input tensor, for any family's image format.

The default family takes grayscale frames stretched to the input size (and goes through
:func:`edge_service.data.preprocess.preprocess`, the path training used); families built
from the user's own ONNX models may take RGB, stretched (classifiers) or letterboxed
(YOLO-style detectors), with per-channel normalisation. One :class:`Preprocess` describes a
variant's input; serving and INT8 calibration both use it, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from edge_service.data.letterbox import Letterbox, decode_rgb, letterbox, to_tensor
from edge_service.data.preprocess import InputSpec, decode_image, preprocess
from edge_service.errors import BadInputError

Color = Literal["gray", "rgb"]
Resize = Literal["stretch", "letterbox"]


@dataclass(frozen=True)
class Preprocess:
    """One variant's input: colour, resize rule, size, normalisation, tensor name."""

    color: Color = "gray"
    resize: Resize = "stretch"
    size: int = 28
    mean: tuple[float, ...] = (0.2860,)
    std: tuple[float, ...] = (0.3530,)
    name: str = "input"

    def __post_init__(self) -> None:
        channels = 1 if self.color == "gray" else 3
        if len(self.mean) not in (1, channels) or len(self.std) not in (1, channels):
            raise BadInputError(f"mean/std need 1 or {channels} values for {self.color} input")
        if self.color == "gray" and self.resize == "letterbox":
            raise BadInputError("letterbox resizing is for rgb inputs")

    @classmethod
    def from_spec(cls, spec: InputSpec) -> Preprocess:
        """The grayscale path of the default family."""
        return cls("gray", "stretch", spec.size, (spec.mean,), (spec.std,), spec.name)

    def decode(
        self,
        data: bytes,
        *,
        width: int | None = None,
        height: int | None = None,
        max_pixels: int = 16_000_000,
    ) -> np.ndarray:
        """Decode a payload to (H, W) gray or (H, W, 3) RGB uint8, as this input needs."""
        if self.color == "gray":
            return decode_image(data, width=width, height=height, max_pixels=max_pixels)
        if width is not None or height is not None:
            raise BadInputError("raw frames are grayscale only; send RGB frames as JPEG/PNG")
        return decode_rgb(data, max_pixels=max_pixels)

    def to_batch(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox | None]:
        """A (1, C, size, size) float32 tensor, and the letterbox geometry if one was used."""
        if self.color == "gray":
            spec = InputSpec(self.name, self.size, self.mean[0], self.std[0])
            return preprocess(image, spec), None
        if self.resize == "letterbox":
            boxed, geometry = letterbox(image, self.size)
            return self._normalise(to_tensor(boxed)), geometry
        resized = Image.fromarray(image).resize((self.size, self.size), Image.Resampling.BILINEAR)
        return self._normalise(to_tensor(np.asarray(resized))), None

    def from_bytes(self, data: bytes) -> np.ndarray:
        """Decode and convert one payload (what INT8 calibration feeds)."""
        return self.to_batch(self.decode(data))[0]

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        if all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.std):
            return x  # 0..1 already (YOLO exports): no copy
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return ((x - mean) / std).astype(np.float32)
