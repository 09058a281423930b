"""Schemathesis against the server's own OpenAPI document: the /v1 API and KServe v2.

A real server (control token set) is fuzzed one operation at a time with schemathesis's
positive and negative cases, plus positive cases aimed past the model-name check
(``model=fashion``, real and made-up variant ids). Every answer must:
- be no 5xx;
- pass schemathesis's checks: a documented status, content type, headers and body schema
  (the error shapes included), invalid input refused, other methods answered with 405;
- when it is a 4xx, carry a JSON reason in its API's error shape.

Left out, and why:
- ``GET /v1/events`` is a Server-Sent Events stream that never ends, so no response ever
  completes to check; tests/integration/test_ops_api.py reads it.
- schemathesis's ``positive_data_acceptance`` check (schema-valid input must get a 2xx):
  an image or tensor body can fit the schema and still be undecodable (a random
  ``image/png`` string), and stream ids follow a rule the schema does not state; a 4xx is
  right for them.
- ``negative_data_rejection`` on the two frame endpoints: any byte string is a valid raw
  frame, so a "schema-violating" mutation of a binary part (a text field) is still a frame.

``/dashboard`` is fuzzed (it takes no input: one request). The numbers of cases run and
statuses seen per operation are printed (``pytest -s`` or ``-rP``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection
from support import run_server

from edge_service.config import Settings
from edge_service.server.app import create_app

pytestmark = pytest.mark.integration
CONTROL = "fuzz-control-token-0123456789"
AUTH = {"Authorization": f"Bearer {CONTROL}"}
NOT_FUZZED = {("GET", "/v1/events")}
RAW_BODIES = {"/v1/infer", "/v1/infer/batch"}
CONTROL_OPS = [("PUT", "/v1/policy"), ("POST", "/v1/pin"), ("POST", "/v1/power-mode")]
# the operations, from the document the server will serve (no server needed to list them)
OPERATIONS = sorted(
    (method.upper(), path)
    for path, ops in create_app(Settings()).openapi()["paths"].items()
    for method in ops
    if (method.upper(), path) not in NOT_FUZZED
)
EXAMPLES = 60  # per generation mode; the inference and control operations get 2x
BUSY = {("POST", "/v1/infer"), ("POST", "/v1/infer/batch"), *CONTROL_OPS}
BUSY |= {("POST", p) for _, p in OPERATIONS if p.endswith("/infer") and p.startswith("/v2")}
FOREIGN = ["nosuch", "..", "../../etc/passwd", "%2e%2e%2f", "base@fp64", "FASHION"]


def _config(url: str, headers: dict[str, str]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "base-url": url,
            "headers": headers,
            "request-timeout": 30,
            "checks": {"positive_data_acceptance": {"enabled": False}},
        }
    )


@pytest.fixture(scope="module")
def fuzz_url(engines_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    env = {"EDGE_CONTROL_TOKEN": CONTROL, "EDGE_MONITOR_SOURCE": "linux"}
    with run_server(engines_dir, log, **env) as url:
        yield url
    text = log.read_text()
    assert "Traceback" not in text, text[text.find("Traceback") - 2000 :][:8000]


@pytest.fixture(scope="module")
def api(fuzz_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json", config=_config(fuzz_url, AUTH))


@pytest.fixture(scope="module")
def variants(fuzz_url: str) -> list[str]:
    return [v["id"] for v in httpx.get(f"{fuzz_url}/v1/variants").json()["variants"]]


def _strategy(operation: Any, path: str, variants: list[str]) -> st.SearchStrategy[Any]:
    """Positive and negative cases, and positive ones that name the served model."""
    cases = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    if "{model}" in path:
        names = st.sampled_from(variants + FOREIGN) if "{version}" in path else st.none()
        cases.append(
            names.flatmap(
                lambda v: operation.as_strategy(
                    GenerationMode.POSITIVE,
                    path_parameters={"model": "fashion"} | ({"version": v} if v else {}),
                )
            )
        )
    return st.one_of(cases)


def assert_error_shape(response: Any, path: str) -> None:
    """A 4xx carries a JSON reason in its API's shape (/v2: KServe's, else ours)."""
    body = response.json()
    if path.startswith("/v2"):
        assert set(body) == {"error", "code"} and body["error"], body
    else:
        assert set(body) == {"error", "detail"} and body["detail"], body


def _run(api: Any, method: str, path: str, variants: list[str], examples: int) -> Counter[int]:
    operation = api[path][method]
    excluded = [negative_data_rejection] if path in RAW_BODIES else []
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, path, variants))
    def fuzz(case: Any) -> None:
        response = case.call()
        statuses[response.status_code] += 1
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
        if response.status_code >= 400:
            assert_error_shape(response, path)
        case.validate_response(response, excluded_checks=excluded)

    fuzz()
    return statuses


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_operation_never_answers_5xx_and_conforms_to_its_schema(api, variants, method, path):
    examples = EXAMPLES * (2 if (method, path) in BUSY else 1) * (3 if "{model}" in path else 2)
    statuses = _run(api, method, path, variants, examples)
    print(f"FUZZ {method} {path}: {sum(statuses.values())} cases, {json.dumps(statuses)}")
    assert not any(code >= 500 for code in statuses)


@pytest.mark.parametrize(("method", "path"), CONTROL_OPS)
def test_control_operation_refuses_every_generated_request_without_the_token(
    fuzz_url, method, path
):
    api = schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json", config=_config(fuzz_url, {}))
    operation = api[path][method]
    statuses: Counter[int] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(case=operation.as_strategy(GenerationMode.POSITIVE))
    def fuzz(case: Any) -> None:
        response = case.call()
        statuses[response.status_code] += 1
        # the body is parsed before the token is checked: unparsable JSON is a 400/422
        assert response.status_code in (400, 401, 422), response.text[:300]
        assert_error_shape(response, path)

    fuzz()
    print(f"NO-TOKEN {method} {path}: {sum(statuses.values())} cases, {json.dumps(statuses)}")
    assert statuses[401] > 0


def test_server_is_healthy_and_correct_after_the_fuzzing(fuzz_url):
    """Runs last in this module: ready, and a good frame still classifies."""
    with httpx.Client(base_url=fuzz_url, timeout=30) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.put("/v1/policy", json={}, headers=AUTH).status_code == 200
        assert client.post("/v1/pin", json={"variant": None}, headers=AUTH).status_code == 200
        frame = bytes(range(256)) * 3 + bytes(16)  # a raw 28x28 frame
        r = client.post("/v1/infer", content=frame)
        assert r.status_code == 200, r.text
        x = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
        r = client.post("/v2/models/fashion/infer", json={"inputs": [x]})
        assert r.status_code == 200 and len(r.json()["outputs"][0]["data"]) == 10, r.text
