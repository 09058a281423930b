"""Security: every state-changing route needs its token, tokens are compared in constant
time (hmac.compare_digest) and never leak (logs at DEBUG, read endpoints, --print-config).
test_security_code.py reads the code and the deploy files: no token compared with ==, the
server never run as root, no shell.

The routes are read from the app's own route table, so a new POST/PUT/PATCH/DELETE route
without a token check fails here. Related checks elsewhere, not repeated:
tests/integration/test_ops_api.py (a wrong control token changes nothing, the inference
token guards inference) and tests/unit/server/test_settings_security.py (the settings'
repr hides the tokens).

A wrong token is answered like a missing one, 401 with ``WWW-Authenticate: Bearer``
(RFC 6750, section 3.1, and docs/api.md); 403 is for control turned off on the server.
"""

from __future__ import annotations

import hmac
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.requests import Request
from starlette.routing import Route
from support import calm_trace, run_server

from edge_service.config import Settings
from edge_service.errors import ForbiddenError, UnauthorizedError
from edge_service.server import deps
from edge_service.server.app import create_app

CONTROL = "control-secret-Zq81xV0b7Kd2"
INFER = "inference-secret-Hw52pT9cLm4"
WRONG = "wrong-secret-Rt73nB6yQa1s"
SECRETS = (CONTROL, INFER, WRONG)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INFERENCE_PATHS = frozenset(
    {
        "/v1/infer",
        "/v1/infer/batch",
        "/v2/models/{model}/infer",
        "/v2/models/{model}/versions/{version}/infer",
    }
)


# ---------------------------------------------------------------- the route table


@dataclass(frozen=True)
class RouteInfo:
    """One endpoint: a method, its path template and every dependency it runs."""

    method: str
    path: str
    calls: frozenset[Callable[..., Any]]


def _dependency_calls(dependant: Any) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


def _routes(routes: Sequence[Any], inherited: Sequence[Depends] = ()) -> Iterator[RouteInfo]:
    """Every endpoint under ``routes``, walking included routers; an unknown kind of route
    fails, so that nothing can hide from the checks."""
    for route in routes:
        if isinstance(route, APIRoute):
            calls = {*_dependency_calls(route.dependant), *(d.dependency for d in inherited)}
            for method in route.methods or ():
                yield RouteInfo(method, route.path, frozenset(c for c in calls if c))
        elif hasattr(route, "original_router"):  # FastAPI >= 0.165 keeps included routers
            extra = [*inherited, *route.include_context.dependencies]
            yield from _routes(route.original_router.routes, extra)
        elif isinstance(route, Route) and route.methods and route.methods <= SAFE_METHODS:
            continue  # FastAPI's own /docs, /redoc, /openapi.json
        else:
            raise AssertionError(f"a route this test cannot inspect: {route!r}")


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings())


@pytest.fixture(scope="module")
def changing_routes(app: FastAPI) -> list[RouteInfo]:
    """Every route whose method may change state (anything but GET, HEAD, OPTIONS)."""
    found = [r for r in _routes(app.routes) if r.method not in SAFE_METHODS]
    assert len(found) >= 7, f"the route walk found too few routes: {found}"
    return found


def _control_routes(routes: list[RouteInfo]) -> list[RouteInfo]:
    return [r for r in routes if r.path not in INFERENCE_PATHS]


def test_every_state_changing_route_depends_on_the_control_or_inference_token_check(
    changing_routes: list[RouteInfo],
) -> None:
    control, inference = deps.ControlDep.dependency, deps.InferenceDep.dependency
    unguarded = [
        f"{r.method} {r.path}"
        for r in changing_routes
        if (inference if r.path in INFERENCE_PATHS else control) not in r.calls
    ]
    assert not unguarded, f"state-changing routes without their token check: {unguarded}"
    assert {(r.method, r.path) for r in _control_routes(changing_routes)} >= {
        ("PUT", "/v1/policy"),
        ("POST", "/v1/pin"),
        ("POST", "/v1/power-mode"),
    }


# ---------------------------------------------------------------- the live server


@dataclass(frozen=True)
class Live:
    url: str
    log: Path
    variant: str


@pytest.fixture(scope="module")
def live(engines_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A server with both tokens set, logging at DEBUG (``serve --verbose``), on a replayed
    idle board: its loop never switches on its own, so what a request changed is all that
    changes (on a busy machine a live monitor would switch variants between two reads)."""
    folder = tmp_path_factory.mktemp("security")
    log = folder / "server.log"
    env = {
        "EDGE_CONTROL_TOKEN": CONTROL,
        "EDGE_INFERENCE_TOKEN": INFER,
        "EDGE_MONITOR_SOURCE": "replay",
        "EDGE_MONITOR_TRACE": str(calm_trace(folder / "calm.jsonl")),
    }
    with run_server(engines_dir, log, extra_args=["--verbose"], **env) as url:
        variant = httpx.get(f"{url}/v1/variants", timeout=60).json()["variants"][0]["id"]
        yield Live(url, log, variant)


def _url_path(template: str, live: Live) -> str:
    return template.replace("{model}", "fashion").replace("{version}", live.variant)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _state(client: httpx.Client) -> dict[str, Any]:
    """What a refused control request could have changed: the policy (pins included), the
    strategy it selects, and the power mode. Not the served variant or the last decision:
    those follow the board as well as the operator."""
    policy = client.get("/v1/policy").json()
    power = client.get("/v1/power-mode").json()
    return {
        "policy": policy["policy"],
        "strategy": policy["strategy"],
        "power_mode": power["current"],
        "threads": power["threads"],
    }


def test_state_changing_routes_refuse_a_missing_wrong_or_other_token_with_401(
    live: Live, changing_routes: list[RouteInfo]
) -> None:
    with httpx.Client(base_url=live.url, timeout=60) as client:
        before = _state(client)
        for route in changing_routes:
            other = CONTROL if route.path in INFERENCE_PATHS else INFER
            for headers in ({}, _bearer(WRONG), _bearer(other), {"authorization": "Basic eDp5"}):
                path = _url_path(route.path, live)
                r = client.request(route.method, path, json={"variant": None}, headers=headers)
                where = f"{route.method} {route.path} with {headers or 'no token'}"
                assert r.status_code == 401, where
                assert r.headers["www-authenticate"].startswith("Bearer"), where
                assert "unauthorized" in r.text, where
        assert _state(client) == before


def _control_bodies(client: httpx.Client) -> dict[tuple[str, str], dict[str, Any]]:
    """A valid body for each control route, one that leaves the state as it is."""
    mode = client.get("/v1/power-mode").json()["current"]["name"]
    return {
        ("PUT", "/v1/policy"): client.get("/v1/policy").json()["policy"],
        ("POST", "/v1/pin"): {"variant": None},
        ("POST", "/v1/power-mode"): {"mode": mode},
    }


def test_state_changing_routes_accept_the_right_token(
    live: Live, changing_routes: list[RouteInfo]
) -> None:
    with httpx.Client(base_url=live.url, timeout=60) as client:
        bodies = _control_bodies(client)
        control = {(r.method, r.path) for r in _control_routes(changing_routes)}
        assert control == set(bodies), "a new control route: add a valid body for it here"
        for (method, path), body in bodies.items():
            r = client.request(method, path, json=body, headers=_bearer(CONTROL))
            assert r.status_code == 200, (method, path, r.text)
        for route in changing_routes:
            if route.path in INFERENCE_PATHS:  # past the token: the empty body is refused
                path = _url_path(route.path, live)
                r = client.request(route.method, path, content=b"", headers=_bearer(INFER))
                assert r.status_code in (400, 415), (route.path, r.text)


def _open_get_paths(app: FastAPI, live: Live) -> list[str]:
    skip = {"/v1/events", "/dashboard/static/{name}"}  # a stream; an allow-listed file
    gets = {r.path for r in _routes(app.routes) if r.method == "GET"} - skip
    return sorted({_url_path(p, live) for p in gets} | {"/openapi.json", "/docs"})


def _first_events(url: str, lines: int = 3) -> str:
    """The first few ``data:`` lines of the event stream."""
    seen: list[str] = []
    with httpx.stream("GET", f"{url}/v1/events?history=50", timeout=60) as r:
        for line in r.iter_lines():
            seen.append(line)
            if sum(x.startswith("data:") for x in seen) >= lines:
                break
    return "\n".join(seen)


def test_no_token_shows_in_any_read_endpoint(app: FastAPI, live: Live) -> None:
    texts = {"/v1/events": _first_events(live.url)}
    with httpx.Client(base_url=live.url, timeout=60) as client:
        for path in _open_get_paths(app, live):
            r = client.get(path)
            assert r.status_code == 200, (path, r.status_code)
            texts[path] = r.text
    assert {"/v1/status", "/v1/policy", "/metrics"} <= set(texts)
    leaks = [(path, s) for path, text in texts.items() for s in SECRETS if s in text]
    assert not leaks


def _squashed_log(log: Path, expect: str, timeout_s: float = 60.0) -> str:
    """The server log without whitespace (its console handler wraps long lines), once it
    shows ``expect`` (the records are written as they come)."""
    deadline = time.monotonic() + timeout_s
    text = re.sub(r"\s+", "", log.read_text(errors="replace"))
    while expect not in text and time.monotonic() < deadline:
        time.sleep(0.1)
        text = re.sub(r"\s+", "", log.read_text(errors="replace"))
    return text


def test_no_token_is_logged_at_debug_level_even_for_refused_requests(live: Live) -> None:
    with httpx.Client(base_url=live.url, timeout=60) as client:
        for token in SECRETS:
            client.put("/v1/policy", json={"latency_budget_ms": -1}, headers=_bearer(token))
            client.post("/v1/pin", json={"variant": None}, headers=_bearer(token))
            client.post("/v1/infer", content=token.encode(), headers=_bearer(token))
        client.get("/v1/status?marker=end-of-security-requests")
    text = _squashed_log(live.log, "end-of-security-requests")
    assert "DEBUG" in text and "POST/v1/pin" in text, "the server did not log at DEBUG level"
    assert not [s for s in SECRETS if s in text]


# ---------------------------------------------------------------- settings and CLI


def _serve_output(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_")}
    cmd = [sys.executable, "-m", "edge_service", "serve", "--print-config", *args]
    return subprocess.run(cmd, env=base | env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [(), ("--json",)], ids=["toml", "json"])
def test_print_config_masks_both_tokens_from_the_environment_and_from_files(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    secret_file = tmp_path / "control-token"
    secret_file.write_text(CONTROL + "\n")
    for env in (
        {"EDGE_CONTROL_TOKEN": CONTROL, "EDGE_INFERENCE_TOKEN": INFER},
        {"EDGE_CONTROL_TOKEN_FILE": str(secret_file), "EDGE_INFERENCE_TOKEN": INFER},
    ):
        done = _serve_output(env, *args)
        assert done.returncode == 0, done.stderr
        assert "**********" in done.stdout
        assert CONTROL not in done.stdout + done.stderr
        assert INFER not in done.stdout + done.stderr


def test_a_refused_token_is_not_echoed_in_the_error() -> None:
    too_short = "short-secret-7"  # under 16 characters: refused
    done = _serve_output({"EDGE_CONTROL_TOKEN": too_short})
    assert done.returncode == 2 and "too short" in done.stderr
    assert too_short not in done.stdout + done.stderr


# ---------------------------------------------------------------- the token check itself


def _request(token: str | None, client: str = "127.0.0.1") -> Request:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    scope = {"type": "http", "method": "PUT", "path": "/v1/policy", "headers": headers,
             "client": (client, 50000), "query_string": b""}  # fmt: skip
    return Request(scope)


def _service(**settings: Any) -> Any:
    return SimpleNamespace(settings=SimpleNamespace(control_enabled=True, **settings))


def test_tokens_are_compared_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    control = _service(control_token=SecretStr(CONTROL), inference_token=SecretStr(INFER))
    deps.ControlDep.dependency(_request(CONTROL), control)
    deps.InferenceDep.dependency(_request(INFER), control)
    with pytest.raises(UnauthorizedError):
        deps.ControlDep.dependency(_request(WRONG), control)
    with pytest.raises(UnauthorizedError):
        deps.InferenceDep.dependency(_request(WRONG), control)
    assert seen == [
        (CONTROL.encode(), CONTROL.encode()),
        (INFER.encode(), INFER.encode()),
        (WRONG.encode(), CONTROL.encode()),
        (WRONG.encode(), INFER.encode()),
    ]


def test_control_is_403_when_turned_off_and_loopback_only_without_a_token() -> None:
    off = SimpleNamespace(settings=SimpleNamespace(control_enabled=False, control_token=None))
    with pytest.raises(ForbiddenError) as refused:
        deps.ControlDep.dependency(_request(CONTROL), off)
    assert refused.value.http_status == 403
    open_control = _service(control_token=None)
    deps.ControlDep.dependency(_request(None), open_control)  # loopback: allowed
    with pytest.raises(UnauthorizedError):
        deps.ControlDep.dependency(_request(None, client="192.0.2.7"), open_control)
