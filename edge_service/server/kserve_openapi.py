"""The OpenAPI description of the KServe v2 infer route (its body is parsed by hand:
JSON, or Triton's binary-data extension, so FastAPI cannot derive it)."""

from __future__ import annotations

from typing import Any

from edge_service.server.schemas import V2ErrorResponse


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for v2 error statuses."""
    return {code: {"model": V2ErrorResponse} for code in codes}


V2_ERRORS = errors(400, 401, 404, 409, 413, 415, 503)

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["FP32", "FP16", "FP64", "UINT8", "BYTES"]},
        "data": {"type": "array", "description": "row-major values (or binary_data_size)"},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}},
    },
}
INFER_OPENAPI: dict[str, Any] = {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": "A JSON inference request; with the binary-data extension, the "
            "JSON header (length in Inference-Header-Content-Length) then raw tensor bytes.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["inputs"],
                        "properties": {
                            "id": {"type": "string"},
                            "inputs": {"type": "array", "items": _TENSOR},
                            "outputs": {"type": "array", "items": {"type": "object"}},
                            "parameters": {"type": "object"},
                        },
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
    "responses": {
        200: {
            "description": "Outputs as JSON, or a JSON header + binary tensors (see "
            "Inference-Header-Content-Length)",
            "content": {"application/json": {}, "application/octet-stream": {}},
        },
        **V2_ERRORS,
    },
}
