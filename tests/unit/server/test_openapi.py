"""The OpenAPI document lists every endpoint, its request bodies and its error responses."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from edge_service.config import Settings
from edge_service.server.app import create_app

EXPECTED = {
    ("get", "/v2"),
    ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"),
    ("get", "/v2/models/{model}"),
    ("get", "/v2/models/{model}/ready"),
    ("get", "/v2/models/{model}/config"),
    ("get", "/v2/models/{model}/stats"),
    ("post", "/v2/models/{model}/infer"),
    ("post", "/v2/models/{model}/versions/{version}/infer"),
    ("post", "/v1/infer"),
    ("post", "/v1/infer/batch"),
    ("get", "/v1/status"),
    ("get", "/v1/variants"),
    ("get", "/v1/policy"),
    ("put", "/v1/policy"),
    ("post", "/v1/pin"),
    ("get", "/v1/power-mode"),
    ("post", "/v1/power-mode"),
    ("get", "/v1/events"),
    ("get", "/v1/streams"),
    ("get", "/metrics"),
    ("get", "/dashboard"),
}


@pytest.fixture(scope="module")
def spec():
    return create_app(Settings()).openapi()


def test_every_endpoint_is_documented(spec):
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert documented >= EXPECTED, EXPECTED - documented
    app = create_app(Settings())
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods - {"HEAD"}:
                assert (method.lower(), route.path) in documented, route.path


@pytest.mark.parametrize(
    ("method", "path", "codes"),
    [
        ("post", "/v1/infer", {"400", "401", "404", "409", "413", "415", "503"}),
        ("post", "/v1/infer/batch", {"400", "401", "409", "413", "415", "503"}),
        ("post", "/v2/models/{model}/infer", {"400", "401", "404", "413", "415", "503"}),
        (
            "post",
            "/v2/models/{model}/versions/{version}/infer",
            {"400", "401", "404", "409", "413", "415", "503"},
        ),
        ("put", "/v1/policy", {"400", "401", "403", "404", "409", "422", "503"}),
        ("post", "/v1/power-mode", {"400", "401", "403", "503"}),
        ("post", "/v1/pin", {"400", "401", "403", "404", "409", "503"}),
        ("get", "/v1/events", {"503"}),
    ],
)
def test_error_responses_are_documented(spec, method, path, codes):
    assert codes <= set(spec["paths"][path][method]["responses"]), path


def test_v2_errors_use_the_protocol_shape_and_v1_errors_ours(spec):
    v2 = spec["paths"]["/v2/models/{model}/infer"]["post"]["responses"]["400"]
    v1 = spec["paths"]["/v1/infer"]["post"]["responses"]["400"]
    assert v2["content"]["application/json"]["schema"]["$ref"].endswith("/V2ErrorResponse")
    assert v1["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


def test_raw_request_bodies_are_described(spec):
    frame = spec["paths"]["/v1/infer"]["post"]["requestBody"]["content"]
    assert {"image/png", "image/jpeg", "application/octet-stream", "multipart/form-data"} <= set(
        frame
    )
    v2 = spec["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/octet-stream"} <= set(v2)


def test_validation_errors_are_documented_in_the_error_shape_of_their_api(spec):
    v1 = spec["paths"]["/v1/infer"]["post"]["responses"]["422"]["content"]["application/json"]
    v2 = spec["paths"]["/v2/models/{model}"]["get"]["responses"]["422"]["content"]
    assert v1["schema"]["$ref"].endswith("/ErrorResponse")
    assert v2["application/json"]["schema"]["$ref"].endswith("/V2ErrorResponse")
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_version_is_a_path_parameter_of_the_versions_routes_only(spec):
    def params(path: str, method: str = "get") -> set[tuple[str, str]]:
        return {(p["name"], p["in"]) for p in spec["paths"][path][method].get("parameters", [])}

    assert ("version", "path") in params("/v2/models/{model}/versions/{version}/infer", "post")
    assert ("version", "path") in params("/v2/models/{model}/versions/{version}/ready")
    assert params("/v2/models/{model}") == {("model", "path")}
    assert ("version", "query") not in params("/v2/models/{model}/infer", "post")
    assert params("/v2/models/stats") == set()
