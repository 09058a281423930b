"""Detection preprocessing: RGB decoding, Ultralytics-style letterbox and its inverse."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_service.data.letterbox import Letterbox, decode_rgb, letterbox, to_tensor
from edge_service.errors import BadInputError

MAX_PIXELS = 16_000_000


def _frame(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png(rgb: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def test_decode_rgb_returns_exact_pixels_when_png_round_trips() -> None:
    rgb = _frame(48, 64)
    out = decode_rgb(_png(rgb), max_pixels=MAX_PIXELS)
    assert out.dtype == np.uint8
    assert np.array_equal(out, rgb)


def test_decode_rgb_gives_three_equal_channels_when_png_is_grayscale() -> None:
    out = decode_rgb(_png(_frame(8, 8), mode="L"), max_pixels=MAX_PIXELS)
    assert out.shape == (8, 8, 3)
    assert np.array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"", "empty"), (b"not an image at all", "cannot decode"), (b"\x89PNG\r\n\x1a\n", "decode")],
)
def test_decode_rgb_raises_bad_input_when_payload_is_unusable(payload: bytes, reason: str) -> None:
    with pytest.raises(BadInputError, match=reason):
        decode_rgb(payload, max_pixels=MAX_PIXELS)


def test_decode_rgb_raises_bad_input_when_image_has_too_many_pixels() -> None:
    with pytest.raises(BadInputError, match="more than 100 pixels"):
        decode_rgb(_png(_frame(20, 20)), max_pixels=100)


def test_letterbox_scales_by_half_and_pads_rows_when_640x480_goes_to_320() -> None:
    img, box = letterbox(_frame(480, 640), 320)
    assert img.shape == (320, 320, 3)
    assert box == Letterbox(scale=0.5, pad_x=0, pad_y=40, size=320, orig_w=640, orig_h=480)
    assert np.all(img[:40] == 114)
    assert np.all(img[280:] == 114)


def test_letterbox_centres_columns_when_image_is_portrait() -> None:
    img, box = letterbox(np.zeros((640, 480, 3), np.uint8), 320, pad_value=0)
    assert (box.pad_x, box.pad_y) == (40, 0)
    assert img[:, 40:280].max() == 0


def test_letterbox_puts_odd_pixel_bottom_when_padding_is_odd() -> None:
    img, box = letterbox(np.zeros((239, 320, 3), np.uint8), 320)
    assert box.pad_y == 40  # 81 rows of padding: 40 above, 41 below (as Ultralytics)
    assert np.all(img[:40] == 114)
    assert np.all(img[279:] == 114)
    assert np.all(img[40:279] == 0)


def test_letterbox_is_identity_when_image_is_already_square_size() -> None:
    rgb = _frame(64, 64)
    img, box = letterbox(rgb, 64)
    assert np.array_equal(img, rgb)
    assert (box.scale, box.pad_x, box.pad_y) == (1.0, 0, 0)


def test_unmap_inverts_map_when_box_lies_inside_image() -> None:
    _, box = letterbox(_frame(480, 640), 320)
    boxes = np.array([[10.0, 20.0, 300.0, 400.0], [0.0, 0.0, 640.0, 480.0]])
    mapped = box.map(boxes)
    assert np.allclose(mapped[0], [5.0, 50.0, 150.0, 240.0])
    assert np.allclose(box.unmap(mapped), boxes)


def test_unmap_clips_to_image_when_box_reaches_into_padding() -> None:
    _, box = letterbox(_frame(480, 640), 320)
    out = box.unmap(np.array([[-5.0, 10.0, 330.0, 300.0]]))
    assert np.allclose(out, [[0.0, 0.0, 640.0, 480.0]])


def test_to_tensor_gives_nchw_unit_range_when_image_is_uint8() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255
    t = to_tensor(rgb)
    assert t.shape == (1, 3, 4, 6)
    assert t.dtype == np.float32
    assert t.flags.c_contiguous
    assert np.all(t[0, 0] == 1.0)
    assert np.all(t[0, 1:] == 0.0)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3))]
)
def test_letterbox_raises_bad_input_when_array_is_not_rgb_uint8(bad: np.ndarray) -> None:
    with pytest.raises(BadInputError):
        letterbox(bad, 32)
