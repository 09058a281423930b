"""One preprocessing path: decoding a served PNG gives the tensor training saw."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_service.data.preprocess import (
    InputSpec,
    decode_image,
    preprocess,
    preprocess_bytes,
    sniff_format,
)
from edge_service.errors import BadInputError

SPEC = InputSpec()


def _encode(gray: np.ndarray, fmt: str, mode: str = "L", **kw: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).convert(mode).save(buf, fmt, **kw)
    return buf.getvalue()


def test_served_png_tensor_equals_training_tensor_when_same_test_image(test_split) -> None:
    images = test_split.images[:64]
    trained = preprocess(images, SPEC)  # what training and evaluation feed the network
    served = np.concatenate([preprocess_bytes(_encode(img, "PNG"), SPEC) for img in images])
    assert served.dtype == trained.dtype == np.float32
    assert np.array_equal(served, trained)


def test_served_raw_tensor_equals_training_tensor_when_frame_is_raw_bytes(test_split) -> None:
    img = test_split.images[7]
    assert np.array_equal(preprocess_bytes(img.tobytes(), SPEC), preprocess(img, SPEC))


def test_rgb_png_becomes_luminance_when_colour_frame_is_sent(test_split) -> None:
    img = test_split.images[3]
    rgb = _encode(img, "PNG", mode="RGB")
    assert np.array_equal(decode_image(rgb), img)


def test_jpeg_decodes_close_to_original_when_quality_is_high(test_split) -> None:
    img = test_split.images[5]
    out = decode_image(_encode(img, "JPEG", quality=95))
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 4


def test_preprocess_resizes_when_frame_is_larger_than_input() -> None:
    frame = np.full((480, 640), 255, dtype=np.uint8)
    batch = preprocess(frame, SPEC)
    assert batch.shape == (1, 1, 28, 28)
    assert np.allclose(batch, (1.0 - SPEC.mean) / SPEC.std)


def test_preprocess_uses_variant_resolution_when_spec_is_smaller(test_split) -> None:
    assert preprocess(test_split.images[:4], InputSpec(size=20)).shape == (4, 1, 20, 20)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "cannot decode"),
        (b"\xff\xd8\xff" + b"\x00" * 50, "cannot decode"),
        (bytes(783), "not square"),
    ],
)
def test_decode_refuses_payload_with_clear_reason_when_it_is_bad(
    payload: bytes, match: str
) -> None:
    with pytest.raises(BadInputError, match=match):
        decode_image(payload)


def test_decode_refuses_raw_frame_when_size_disagrees_with_width_height() -> None:
    with pytest.raises(BadInputError, match="needs 1200"):
        decode_image(bytes(1000), width=40, height=30)


def test_decode_refuses_image_when_over_pixel_limit() -> None:
    big = _encode(np.zeros((100, 100), dtype=np.uint8), "PNG")
    with pytest.raises(BadInputError, match="more than"):
        decode_image(big, max_pixels=5000)


def test_sniff_format_names_png_jpeg_and_raw() -> None:
    assert sniff_format(b"\x89PNG\r\n\x1a\nrest") == "png"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_format(b"\x00\x01") == "raw"
