"""Property-based tests of the pure request decoders: the image decoder, the KServe v2
tensor parser and the multipart frame splitter.

The property is the same for each: whatever bytes arrive, the decoder returns a value of
the documented form or raises BadInputError (the server's 4xx), never anything else (a
500). Inputs are grown from valid payloads (PNG, JPEG, v2 requests) and then cut, flipped
and spliced, so the fuzzing reaches past the first magic-number check.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile_inputs import (
    bomb_png,
    encoded,
    multipart_bodies,
    mutated,
    other_encoded,
    v2_bodies,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge_service.data.letterbox import decode_rgb
from edge_service.data.preprocess import decode_image
from edge_service.errors import BadInputError
from edge_service.server.frames import multipart_frames
from edge_service.server.v2codec import parse_request

PIXEL_LIMIT = 1_000_000  # the decoders' limit in these tests (the server's is a setting)
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The inputs make PIL and numpy warn on purpose: PIL about images of 89-179 Mpx (before the
# decoder refuses them) and odd palettes, numpy about FP16 data such as 1e6 (refused later).
pytestmark = [
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore:Palette images with Transparency:UserWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]


def _decodes_or_refuses(data: bytes, **kwargs: Any) -> None:
    try:
        gray = decode_image(data, max_pixels=PIXEL_LIMIT, **kwargs)
    except BadInputError as exc:
        assert exc.http_status == 400 and exc.message
        return
    assert gray.dtype == np.uint8 and gray.ndim == 2
    assert 0 < gray.size <= max(PIXEL_LIMIT, len(data))


@FUZZ
@given(mutated(encoded))
@example(b"")  # zero bytes
@example(b"\x89PNG\r\n\x1a\n")  # the magic alone
@example(b"\xff\xd8\xff")
@example(bomb_png(50_000, 50_000))  # 2.5 Gpx: PIL's own DecompressionBombError
@example(bomb_png(10_000, 10_000))  # 100 Mpx: over PIL's warning threshold
@example(bomb_png(2_000, 2_000))  # 4 Mpx: under PIL's limits, over ours
@example(bomb_png(0, 10))  # no pixels
def test_image_decoder_returns_gray_pixels_or_a_bad_input_error_for_any_bytes(data):
    _decodes_or_refuses(data)


@settings(FUZZ, max_examples=800)
@given(mutated(encoded | other_encoded))
def test_rgb_decoder_returns_rgb_pixels_or_a_bad_input_error_for_any_bytes(data):
    try:
        rgb = decode_rgb(data, max_pixels=PIXEL_LIMIT)
    except BadInputError as exc:
        assert exc.http_status == 400 and exc.message
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


@FUZZ
@given(
    st.binary(max_size=2048),
    st.none() | st.integers(-2, 2**70),
    st.none() | st.integers(-2, 64),
)
def test_raw_frames_decode_only_when_the_geometry_matches_the_byte_count(data, width, height):
    _decodes_or_refuses(data, width=width, height=height)


def test_bomb_is_a_bad_input_error_even_when_warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for side in (10_000, 50_000):
            with pytest.raises(BadInputError, match="pixels"):
                decode_image(bomb_png(side, side), max_pixels=200_000_000)


BOMB_PROBE = """
import resource, sys
sys.path.insert(0, sys.argv[1])
from hostile_inputs import bomb_png
from edge_service.data.preprocess import decode_image
from edge_service.errors import BadInputError
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:"))
headroom = 48 * 2**20  # far less than any of the bombs would decode to
resource.setrlimit(resource.RLIMIT_AS, (vm * 1024 + headroom, resource.RLIM_INFINITY))
for side in (50_000, 20_000, 12_000, 9_000):
    try:
        decode_image(bomb_png(side, side), max_pixels=1_000_000)
    except BadInputError as exc:
        print(side, "refused:", exc.message)
    else:
        sys.exit(f"{side}x{side} decoded")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, sets RLIMIT_AS")
def test_decompression_bombs_are_refused_before_their_pixels_are_allocated():
    """Each bomb (a few hundred bytes) would need 81 MB to 2.5 GB once decoded; the decoder
    runs with 48 MB of address space to spare and must refuse every one."""
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", BOMB_PROBE, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("refused") == 4, run.stdout


def _parses_or_refuses(body: bytes, length: str | None) -> None:
    try:
        req = parse_request(body, length)
    except BadInputError as exc:
        assert exc.http_status == 400 and exc.message
        return
    for tensor in req.inputs:
        count = int(np.prod(tensor.shape, dtype=object)) if tensor.shape else 1
        if tensor.datatype == "BYTES":
            assert tensor.items is not None and len(tensor.items) == count
        else:
            assert tensor.array is not None and tensor.array.shape == tensor.shape


def _one(datatype: str, shape: str, data: str) -> bytes:
    return (
        f'{{"inputs": [{{"name": "input", "shape": {shape}, "datatype": "{datatype}", '
        f'"data": {data}}}]}}'
    ).encode()


@settings(FUZZ, max_examples=1000)
@given(v2_bodies())
@example((b"", None))
@example((b"[" * 100_000, None))  # deeper than the JSON parser's recursion
@example((_one("FP32", "[1]", "[1" + "0" * 5000 + "]"), None))  # over Python's 4300 digits
@example((_one("UINT8", "[1]", "[300]"), None))
@example((_one("INT32", "[1]", "[1e300]"), None))
@example((_one("FP32", "[4294967296, 4294967296]", "[]"), None))  # int64 product wraps to 0
@example((_one("FP32", "[0, 1180591620717411303424]", "[]"), None))  # a dim over int64
@example((_one("FP32", "[" + ", ".join(["1"] * 100) + "]", "[1]"), None))  # rank 100
@example((_one("BYTES", "[2, 1]", '[["a"], "b"]'), None))  # ragged
@example((_one("BYTES", "[1]", '["\\udc80"]'), None))  # half a surrogate pair
@example((b'{"inputs": []}', "\u00b2"))  # a digit to str.isdigit(), not to int()
@example((b'{"inputs": []}', "9" * 5000))
def test_v2_parser_returns_tensors_or_a_bad_input_error_for_any_request(body_and_length):
    _parses_or_refuses(*body_and_length)


@FUZZ
@given(
    multipart_bodies()
    | st.tuples(
        # a header value arrives latin-1 decoded (as Starlette gives it), hence the alphabet
        st.text(st.characters(max_codepoint=255), max_size=40).map(
            lambda b: f"multipart/form-data; boundary={b}"
        ),
        st.binary(max_size=256),
    )
)
def test_multipart_splitter_returns_file_parts_or_a_bad_input_error(content_type_and_body):
    content_type, body = content_type_and_body
    try:
        parts = multipart_frames(content_type, body)
    except BadInputError:
        return
    assert parts and all(isinstance(data, bytes) and data for _, data in parts)
