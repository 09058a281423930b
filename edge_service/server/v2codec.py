"""The KServe v2 / Open Inference Protocol wire format, with Triton's binary-data extension.

A request body is a JSON header, optionally followed by binary tensor data; the header's
length is given by the ``Inference-Header-Content-Length`` HTTP header (Triton clients send
it even on pure JSON bodies). Inputs carry data either as JSON (``data``, flat or nested,
row-major) or as ``parameters.binary_data_size`` bytes taken from the binary section in
input order. BYTES elements are length-prefixed (4-byte little-endian) in binary.

Pure functions: bytes in, arrays out, and back. Every malformed request raises
BadInputError saying what is wrong.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_service.errors import BadInputError

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
TRITON_TYPES = {name: f"TYPE_{name}" for name in DTYPES} | {"BYTES": "TYPE_STRING"}
MAX_ELEMENTS = 64 * 1024 * 1024
MAX_RANK = 8  # dimensions per tensor (numpy's own limit is 64)


@dataclass
class V2Input:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray | None = None  # numeric tensors
    items: list[bytes] | None = None  # BYTES tensors, flattened


@dataclass
class V2Output:
    """An output the client asked for (none asked: all, with the request's defaults)."""

    name: str
    binary: bool
    classification: int = 0


@dataclass
class V2Request:
    id: str | None
    inputs: list[V2Input]
    outputs: list[V2Output] | None
    binary_default: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_request(body: bytes, header_length: str | None) -> V2Request:
    """Parse a v2 inference request (JSON, or JSON header + binary data)."""
    json_len = _header_length(header_length, len(body))
    try:
        header = json.loads(body[:json_len] or b"null")
    except RecursionError as exc:
        raise BadInputError("the inference request header nests too deeply to parse") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise BadInputError(f"the inference request header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise BadInputError("the inference request must be a JSON object with 'inputs'")
    params = _object(header.get("parameters"), "parameters")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadInputError("the request needs 'inputs': a non-empty list of tensors")
    binary = memoryview(body)[json_len:]
    inputs, at = [], 0
    for i, raw in enumerate(raw_inputs):
        tensor, used = _input(raw, i, binary[at:])
        inputs.append(tensor)
        at += used
    if at != len(binary):
        raise BadInputError(
            f"the body has {len(binary)} bytes of binary data but the inputs' "
            f"binary_data_size add up to {at}"
        )
    rid = header.get("id")
    binary_default = bool(params.get("binary_data_output", False))
    outputs = None
    if header.get("outputs") is not None:
        if not isinstance(header["outputs"], list):
            raise BadInputError("'outputs' must be a list of {name, parameters}")
        outputs = [_output(o, binary_default) for o in header["outputs"]]
    return V2Request(
        id=str(rid) if rid is not None else None,
        inputs=inputs,
        outputs=outputs,
        binary_default=binary_default,
        parameters=params,
    )


def _header_length(value: str | None, body_len: int) -> int:
    if value is None:
        return body_len
    digits = value.strip()
    # ASCII digits only: str.isdigit() also admits '²', which int() then refuses
    if not (digits.isascii() and digits.isdigit()):
        raise BadInputError(
            f"Inference-Header-Content-Length must be a byte count, got {value[:40]!r}"
        )
    digits = digits.lstrip("0") or "0"
    n = int(digits) if len(digits) <= len(str(body_len)) else body_len + 1
    if n > body_len:
        raise BadInputError(
            f"Inference-Header-Content-Length {n} is longer than the body ({body_len} bytes)"
        )
    return n


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInputError(f"'{what}' must be a JSON object")
    return value


def _input(raw: Any, i: int, binary: memoryview) -> tuple[V2Input, int]:
    """One input tensor and how many binary bytes it used."""
    if not isinstance(raw, dict):
        raise BadInputError(f"inputs[{i}] must be an object with name, shape, datatype")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise BadInputError(f"inputs[{i}] needs a 'name'")
    if datatype not in DTYPES and datatype != "BYTES":
        raise BadInputError(
            f"input {name!r}: datatype {datatype!r} is not one of {[*DTYPES, 'BYTES']}"
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ELEMENTS for d in shape
    ):
        raise BadInputError(
            f"input {name!r}: 'shape' must be a list of non-negative integers "
            f"(each at most {MAX_ELEMENTS})"
        )
    if len(shape) > MAX_RANK:
        raise BadInputError(f"input {name!r}: {len(shape)} dimensions is over the {MAX_RANK} limit")
    count = math.prod(shape)  # exact: numpy's int64 product wraps around on huge shapes
    if count > MAX_ELEMENTS:
        raise BadInputError(f"input {name!r}: {count} elements is over the {MAX_ELEMENTS} limit")
    params = _object(raw.get("parameters"), f"inputs[{i}].parameters")
    size = params.get("binary_data_size")
    tensor = V2Input(name, datatype, tuple(shape))
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadInputError(f"input {name!r}: binary_data_size must be a byte count")
        if size > len(binary):
            raise BadInputError(
                f"input {name!r}: binary_data_size {size} is more than the {len(binary)} "
                "bytes of binary data left in the body"
            )
        _from_binary(tensor, bytes(binary[:size]), count)
        return tensor, size
    if "data" not in raw:
        raise BadInputError(f"input {name!r} has neither 'data' nor binary_data_size")
    _from_json(tensor, raw["data"], count)
    return tensor, 0


def _from_binary(tensor: V2Input, data: bytes, count: int) -> None:
    if tensor.datatype == "BYTES":
        tensor.items = unpack_bytes(data, tensor.name)
        if len(tensor.items) != count:
            raise BadInputError(
                f"input {tensor.name!r}: {len(tensor.items)} BYTES elements for shape "
                f"{list(tensor.shape)} ({count} elements)"
            )
        return
    dtype = DTYPES[tensor.datatype]
    if len(data) != count * dtype.itemsize:
        raise BadInputError(
            f"input {tensor.name!r}: {len(data)} bytes for shape {list(tensor.shape)} "
            f"{tensor.datatype} (needs {count * dtype.itemsize})"
        )
    tensor.array = np.frombuffer(data, dtype=dtype).reshape(tensor.shape)


def _from_json(tensor: V2Input, data: Any, count: int) -> None:
    if tensor.datatype == "BYTES":
        flat = _strings(data)
        if flat is None:
            raise BadInputError(
                f"input {tensor.name!r}: BYTES data must be strings (flat or nested lists)"
            )
        try:
            tensor.items = [x.encode() for x in flat]
        except UnicodeEncodeError as exc:  # "\udc80": JSON escapes half a surrogate pair
            raise BadInputError(f"input {tensor.name!r}: BYTES data is not UTF-8 text") from exc
        got = len(tensor.items)
    else:
        arr = _numeric(tensor, data)
        got = arr.size
        if got == count:
            tensor.array = arr.reshape(tensor.shape)
    if got != count:
        raise BadInputError(
            f"input {tensor.name!r}: {got} data elements for shape {list(tensor.shape)} "
            f"({count} elements)"
        )


def _numeric(tensor: V2Input, data: Any) -> np.ndarray:
    """JSON numbers as the tensor's dtype; integer types take only in-range integers.

    numpy would wrap silently (300 or 300.0 as UINT8 becomes 44, 1.7 becomes 1), so an
    integer tensor's values are read exactly first and checked against the type's range.
    """
    dtype = DTYPES[tensor.datatype]
    try:
        if dtype.kind == "f":
            return np.asarray(data, dtype=dtype)
        raw = np.asarray(data)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise BadInputError(
            f"input {tensor.name!r}: data is not a {tensor.datatype} array: {exc}"
        ) from exc
    if raw.size == 0:
        return raw.astype(dtype)
    if dtype.kind == "b":
        ok = raw.dtype.kind == "b"
    else:
        info = np.iinfo(dtype)
        ok = raw.dtype.kind in "iu" and bool(raw.min() >= info.min and raw.max() <= info.max)
    if not ok:
        want = "true/false" if dtype.kind == "b" else f"integers in [{info.min}, {info.max}]"
        raise BadInputError(f"input {tensor.name!r}: {tensor.datatype} data must be {want}")
    return raw.astype(dtype)


def _strings(data: Any) -> list[str] | None:
    """The strings of a (nested) JSON list in row-major order, None if any leaf is not one.
    Iterative, and not numpy: ragged lists are fine here, the count is checked after."""
    out: list[str] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            stack.extend(reversed(item))
        else:
            return None
    return out


def _output(raw: Any, binary_default: bool) -> V2Output:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise BadInputError("each requested output needs a 'name'")
    params = _object(raw.get("parameters"), f"output {raw['name']!r} parameters")
    k = params.get("classification", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise BadInputError(f"output {raw['name']!r}: classification must be a count >= 0")
    return V2Output(raw["name"], bool(params.get("binary_data", binary_default)), k)


def unpack_bytes(data: bytes, name: str) -> list[bytes]:
    """Length-prefixed BYTES elements (4-byte little-endian length, then the bytes)."""
    items, at = [], 0
    while at < len(data):
        if at + 4 > len(data):
            raise BadInputError(f"input {name!r}: truncated BYTES element length")
        (n,) = struct.unpack_from("<I", data, at)
        at += 4
        if at + n > len(data):
            raise BadInputError(f"input {name!r}: BYTES element of {n} bytes is truncated")
        items.append(data[at : at + n])
        at += n
    return items


def pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


@dataclass
class OutTensor:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray | None = None
    items: list[bytes] | None = None
    binary: bool = False


def encode_response(
    model: str, version: str, rid: str | None, outputs: list[OutTensor]
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    header_outputs, blobs = [], []
    for out in outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.binary:
            blob = (
                pack_bytes(out.items or [])
                if out.datatype == "BYTES"
                else np.ascontiguousarray(out.array, dtype=DTYPES[out.datatype]).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif out.datatype == "BYTES":
            entry["data"] = [x.decode("utf-8", "replace") for x in out.items or []]
        else:
            assert out.array is not None
            entry["data"] = out.array.reshape(-1).tolist()
        header_outputs.append(entry)
    header: dict[str, Any] = {"model_name": model, "model_version": version}
    if rid is not None:
        header["id"] = rid
    header["outputs"] = header_outputs
    text = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)
