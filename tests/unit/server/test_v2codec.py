"""The KServe v2 wire format: JSON tensors, Triton's binary extension, and every refusal."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edge_service.errors import BadInputError
from edge_service.server.v2codec import (
    OutTensor,
    encode_response,
    pack_bytes,
    parse_request,
    unpack_bytes,
)


def _binary_request(header: dict, blobs: list[bytes]) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), str(len(text))


def test_json_tensor_parses_nested_or_flat_data_to_the_declared_shape():
    for data in ([[1, 2], [3, 4]], [1, 2, 3, 4]):
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": data}]}
        ).encode()
        req = parse_request(body, None)
        assert req.inputs[0].array is not None
        np.testing.assert_array_equal(req.inputs[0].array, [[1, 2], [3, 4]])
        assert req.inputs[0].array.dtype == np.float32


def test_pure_json_body_with_inference_header_length_parses_like_perf_analyzer_sends_it():
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [7]}]})
    req = parse_request(body.encode(), str(len(body)))
    assert req.inputs[0].array is not None and req.inputs[0].array.tolist() == [7]


def test_binary_tensors_are_taken_from_the_tail_in_input_order():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1, 2], dtype=np.uint8)
    header = {
        "id": "r1",
        "inputs": [
            {"name": "a", "shape": [2, 3], "datatype": "FP32",
             "parameters": {"binary_data_size": a.nbytes}},
            {"name": "b", "shape": [2], "datatype": "UINT8",
             "parameters": {"binary_data_size": b.nbytes}},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True, "classification": 3}}],
    }  # fmt: skip
    body, length = _binary_request(header, [a.tobytes(), b.tobytes()])
    req = parse_request(body, length)
    np.testing.assert_array_equal(req.inputs[0].array, a)
    np.testing.assert_array_equal(req.inputs[1].array, b)
    assert req.id == "r1"
    assert req.outputs is not None and req.outputs[0].binary and req.outputs[0].classification == 3


def test_bytes_elements_round_trip_through_length_prefixes():
    items = [b"\x89PNG...", b"", b"jpeg"]
    assert unpack_bytes(pack_bytes(items), "x") == items
    header = {
        "inputs": [{"name": "img", "shape": [3], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(pack_bytes(items))}}]
    }  # fmt: skip
    body, length = _binary_request(header, [pack_bytes(items)])
    assert parse_request(body, length).inputs[0].items == items


@pytest.mark.parametrize(
    ("body", "length", "says"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (b"{}", None, "needs 'inputs'"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}', None,
         "1 data elements"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "COMPLEX", "data": [1, 2]}]}',
         None, "datatype"),
        (b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}', None,
         "non-negative"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "neither"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}', None,
         "not a FP32 array"),
        (b"{}", "99", "longer than the body"),
        (b"{}", "two", "byte count"),
    ],
)  # fmt: skip
def test_malformed_requests_are_refused_with_a_reason(body, length, says):
    with pytest.raises(BadInputError, match=says):
        parse_request(body, length)


def test_binary_sizes_must_match_the_shape_and_the_body():
    header = {
        "inputs": [{"name": "x", "shape": [4], "datatype": "FP32",
                    "parameters": {"binary_data_size": 12}}]
    }  # fmt: skip
    body, length = _binary_request(header, [b"\x00" * 12])
    with pytest.raises(BadInputError, match="needs 16"):
        parse_request(body, length)
    body, length = _binary_request(header, [b"\x00" * 8])
    with pytest.raises(BadInputError, match="binary data left"):
        parse_request(body, length)
    header["inputs"][0]["parameters"]["binary_data_size"] = 16
    body, length = _binary_request(header, [b"\x00" * 20])
    with pytest.raises(BadInputError, match="add up to 16"):
        parse_request(body, length)


def test_truncated_bytes_elements_are_refused():
    with pytest.raises(BadInputError, match="truncated"):
        unpack_bytes(struct.pack("<I", 10) + b"abc", "x")


def test_response_is_json_unless_an_output_is_binary():
    arr = np.array([[0.5, 1.5]], dtype=np.float32)
    body, length = encode_response("m", "v@fp32", "7", [OutTensor("y", "FP32", [1, 2], array=arr)])
    assert length is None
    doc = json.loads(body)
    assert doc["id"] == "7" and doc["model_version"] == "v@fp32"
    assert doc["outputs"][0]["data"] == [0.5, 1.5]
    body, length = encode_response(
        "m", "v", None,
        [OutTensor("y", "FP32", [1, 2], array=arr, binary=True),
         OutTensor("c", "BYTES", [1, 1], items=[b"0.9:1:shirt"], binary=True)],
    )  # fmt: skip
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8
    tail = body[length:]
    np.testing.assert_array_equal(np.frombuffer(tail[:8], dtype=np.float32), [0.5, 1.5])
    assert unpack_bytes(tail[8:], "c") == [b"0.9:1:shirt"]


def _json_body(datatype: str, data: list) -> bytes:
    tensor = {"name": "input", "datatype": datatype, "shape": [len(data)], "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("UINT8", [300]),  # numpy would wrap it to 44
        ("UINT8", [300.0]),
        ("UINT8", [1.7]),  # numpy would truncate it to 1
        ("UINT8", [-1]),
        ("INT8", [128]),
        ("UINT8", [True]),
        ("BOOL", [1]),
    ],
)
def test_integer_json_data_is_refused_when_it_would_wrap_or_truncate(datatype, data):
    with pytest.raises(BadInputError, match=datatype):
        parse_request(_json_body(datatype, data), None)


def test_integer_json_data_in_range_parses_exactly_when_given():
    req = parse_request(_json_body("UINT8", [0, 255, 7]), None)
    assert req.inputs[0].array.tolist() == [0, 255, 7]
    assert parse_request(_json_body("BOOL", [True, False]), None).inputs[0].array.dtype == bool
