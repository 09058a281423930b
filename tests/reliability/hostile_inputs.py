"""Hostile inputs, as hypothesis strategies and builders, shared by the reliability tests:
valid images and KServe v2 requests that are then truncated, bit-flipped and spliced,
decompression bombs, and v2 tensors whose shapes, dtypes and byte counts lie.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from edge_service.server.v2codec import DTYPES, pack_bytes


def _encode(image: np.ndarray, fmt: str, mode: str | None = None, **options: Any) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(image)
    if mode == "I;16":
        img = Image.fromarray(image.astype(np.uint16) * 257 if image.ndim == 2 else image[..., 0])
    elif mode is not None:
        img = img.convert(mode)
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int, rows: int = 1) -> bytes:
    """A valid-looking grayscale PNG declaring ``width`` x ``height`` pixels but carrying
    only ``rows`` rows of zeros: a few hundred bytes that would decode to gigabytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = zlib.compress(b"\x00" * (rows * (width + 1)), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", raw)
        + _png_chunk(b"IEND", b"")
    )


images = st.builds(
    lambda h, w, c, seed: (
        np.random.default_rng(seed)
        .integers(0, 256, (h, w, c) if c > 1 else (h, w))
        .astype(np.uint8)
    ),
    st.integers(1, 40),
    st.integers(1, 40),
    st.sampled_from([1, 3, 4]),
    st.integers(0, 2**16),
)
encoded = st.one_of(
    st.builds(_encode, images, st.just("PNG"), st.sampled_from([None, "P", "1", "LA", "I;16"])),
    st.builds(
        lambda im, mode, q, progressive: _encode(
            im[..., :3] if im.ndim == 3 else im, "JPEG", mode, quality=q, progressive=progressive
        ),
        images,
        st.sampled_from([None, "CMYK", "L"]),
        st.integers(1, 95),
        st.booleans(),
    ),
    st.builds(bomb_png, st.integers(1, 70_000), st.integers(1, 70_000), st.integers(0, 2)),
)


# Formats PIL also reads (and writes, so that a valid file can be damaged): the RGB decoder
# of colour families takes any of them.
OTHER_FORMATS = ["GIF", "TIFF", "BMP", "WEBP", "ICO", "DDS", "PCX", "TGA", "SGI", "PPM"]


def _encode_other(image: np.ndarray, fmt: str) -> bytes:
    img = Image.fromarray(image if image.ndim == 2 or image.shape[2] == 3 else image[..., :3])
    options: dict[str, Any] = {}
    if fmt == "GIF":
        img = img.convert("P")
    if fmt in ("GIF", "TIFF", "WEBP"):
        options = {"save_all": True, "append_images": [img, img]}  # three frames
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


other_encoded = st.builds(_encode_other, images, st.sampled_from(OTHER_FORMATS))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` bytes truncated, bit-flipped, overwritten or spliced with junk."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            junk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(junk)] = junk
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


DATATYPES = [*DTYPES, "BYTES", "BYTES", "FP32", "FP8", "STRING", "", "fp32"]
odd_dims = st.integers(-3, 2**70) | st.sampled_from([2**32, 2**63, 2**64 + 1, 64 * 2**20 + 1])
shapes = (
    st.lists(st.integers(0, 4), max_size=4)  # mostly plausible
    | st.lists(st.integers(0, 4) | odd_dims, max_size=5)
    | st.lists(st.just(1), min_size=9, max_size=80)
    | st.lists(st.integers(0, 4), max_size=4)
)
numbers = (
    st.integers(-300, 300)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
)
# text, or half a surrogate pair: JSON escapes it ("\\ud800") and Python decodes it alone
texts = st.text(max_size=6) | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
json_scalars = st.none() | numbers | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=30,
)


def _count(shape: list[int]) -> int:
    return math.prod(shape) if all(isinstance(d, int) and 0 <= d < 2**20 for d in shape) else -1


@st.composite
def tensor_data(draw: st.DrawFn, datatype: str, shape: list[int]) -> Any:
    """JSON ``data`` that fits the shape most of the time (so the parser goes deep)."""
    count = _count(shape)
    if 0 <= count <= 64 and draw(st.integers(0, 3)):
        leaf = texts if datatype == "BYTES" else numbers
        flat = draw(st.lists(leaf, min_size=count, max_size=count))
        if 1 < len(shape) <= 8 and count and draw(st.booleans()):
            return np.asarray(flat, dtype=object).reshape(shape).tolist()  # nested form
        return flat
    return draw(json_values)


@st.composite
def tensor_blob(draw: st.DrawFn, datatype: str, shape: list[int]) -> bytes:
    """Binary data of the right size most of the time, else cut or padded."""
    count = max(_count(shape), 0)
    # at most 256 elements of the right size, as for the fixed-size types: a shape such as
    # [4, 8193] asks for a list longer than Hypothesis can draw (InvalidArgument), and
    # whether it gets there depended on the engine's time-based choices on a busy machine
    if datatype == "BYTES" and count <= 256:
        blob = pack_bytes(draw(st.lists(st.binary(max_size=8), min_size=count, max_size=count)))
    elif datatype in DTYPES and count <= 256:
        blob = draw(
            st.binary(
                min_size=count * DTYPES[datatype].itemsize,
                max_size=count * DTYPES[datatype].itemsize,
            )
        )
    else:
        blob = draw(st.binary(max_size=64))
    if not draw(st.integers(0, 3)):
        blob = draw(mutated(st.just(blob)))
    return blob


@st.composite
def v2_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A v2 request: well-formed enough to reach the tensor parser, then damaged."""
    inputs = []
    blobs = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 2, 3, 0]))):
        shape = draw(shapes)
        datatype = draw(st.sampled_from(DATATYPES))
        tensor: dict[str, Any] = {
            "name": draw(st.sampled_from(["input"] * 4 + ["x", ""])),
            "datatype": datatype,
            "shape": shape,
        }
        if draw(st.booleans()):
            blob = draw(tensor_blob(datatype, shape))
            blobs.append(blob)
            size: Any = draw(st.sampled_from([len(blob)] * 6 + [len(blob) + 1, -1, "8", 2**70]))
            tensor["parameters"] = {"binary_data_size": size}
        else:
            tensor["data"] = draw(tensor_data(datatype, shape))
        inputs.append(tensor)
    header: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        header["outputs"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.text(max_size=5) | st.integers()},
                    optional={
                        "parameters": st.dictionaries(
                            st.sampled_from(["classification", "binary_data"]), json_scalars
                        )
                    },
                ),
                max_size=2,
            )
            | json_values
        )
    if not draw(st.integers(0, 4)):
        header["parameters"] = draw(
            st.dictionaries(st.sampled_from(["binary_data_output", "x"]), json_scalars)
            | json_values
        )
    if draw(st.booleans()):
        header["id"] = draw(json_values)
    text = json.dumps(header).encode()
    if not draw(st.integers(0, 5)):  # malformed JSON
        text = draw(mutated(st.just(text)))
    body = text + b"".join(blobs)
    exact = None if not blobs else str(len(text))
    length = draw(
        st.sampled_from(
            [exact] * 8 + [str(len(text)), str(len(text) + 1), "-1", "abc", "²", "9" * 5000]
        )
    )
    return body, length


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """A multipart/form-data content type and body: file and text parts, odd headers,
    then damaged like any other payload."""
    boundary = draw(st.sampled_from(["b0undary", "x", "a" * 70, ""]))
    chunks = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(['"frame"', '"note"', "frame", "", "*=utf-8''%ZZ"]))
        disposition = draw(st.sampled_from(["form-data", "attachment", "inline", ""]))
        filename = draw(
            st.sampled_from(["", '; filename="a.png"', "; filename*=utf-8''%E2%82", '; filename="'])
        )
        encoding = draw(
            st.sampled_from(
                [
                    "",
                    "Content-Transfer-Encoding: base64\r\n",
                    "Content-Transfer-Encoding: quoted-printable\r\n",
                ]
            )
        )
        head = f"--{boundary}\r\nContent-Disposition: {disposition}; name={name}{filename}\r\n"
        chunks.append(head.encode("latin-1") + encoding.encode() + b"\r\n")
        chunks.append(draw(st.binary(max_size=24)) + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    if draw(st.booleans()):
        body = draw(mutated(st.just(body)))
    return f"multipart/form-data; boundary={boundary}", body


@st.composite
def family_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """v2 requests shaped like the fashion family's input (N x 1 x 28 x 28), right or
    subtly wrong: dtype, shape, NaN, a damaged binary section, odd outputs."""
    n = draw(st.sampled_from([1, 1, 2, 9, 0]))
    shape = draw(
        st.sampled_from([[n, 1, 28, 28]] * 4 + [[n, 28, 28], [n, 1, 28, 27], [n, 3, 28, 28]])
    )
    datatype = draw(st.sampled_from(["FP32", "FP32", "FP16", "FP64", "UINT8", "INT8", "BOOL"]))
    count = int(np.prod(shape))
    values = np.random.default_rng(draw(st.integers(0, 99))).normal(0, 1, count)
    if count and draw(st.integers(0, 5)) == 0:
        values[draw(st.integers(0, max(count - 1, 0)))] = draw(st.sampled_from([np.nan, np.inf]))
    arr = values.astype(np.float64 if datatype == "FP64" else np.float32)
    if datatype in ("UINT8", "INT8", "BOOL"):
        arr = np.nan_to_num(arr).clip(0, 1).astype({"BOOL": np.bool_}.get(datatype, np.uint8))
    out: dict[str, Any] = {"name": draw(st.sampled_from(["logits", "logits", "x"]))}
    out["parameters"] = draw(
        st.fixed_dictionaries(
            {}, optional={"classification": st.integers(-1, 2**40), "binary_data": st.booleans()}
        )
    )
    inp: dict[str, Any] = {"name": "input", "shape": shape, "datatype": datatype}
    if draw(st.booleans()) or count > 2000:
        blob = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        blob = draw(mutated(st.just(blob))) if draw(st.integers(0, 3)) == 0 else blob
        inp["parameters"] = {"binary_data_size": draw(st.sampled_from([len(blob)] * 5 + [3136]))}
        text = json.dumps({"inputs": [inp], "outputs": [out]}).encode()
        return text + blob, {"Inference-Header-Content-Length": str(len(text))}
    inp["data"] = arr.reshape(-1).tolist()
    return json.dumps({"inputs": [inp], "outputs": [out]}).encode(), {}
