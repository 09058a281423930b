"""The dashboard's routes: the page and its two assets, and nothing loaded from outside."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from edge_service.errors import EdgeServiceError
from edge_service.server import dashboard


async def _as_json(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EdgeServiceError)  # the app maps these the same way
    return JSONResponse({"error": exc.code, "detail": exc.message}, status_code=exc.http_status)


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.include_router(dashboard.router)
    app.add_exception_handler(EdgeServiceError, _as_json)
    return TestClient(app)


def test_dashboard_page_is_html_under_a_same_origin_policy_when_requested(client):
    r = client.get("/dashboard")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert 'id="events-body"' in r.text


def test_every_asset_the_page_references_is_served_with_its_type_when_requested(client):
    page = client.get("/dashboard").text
    refs = re.findall(r'(?:src|href)="(dashboard/static/[^"]+)"', page)
    assert sorted(ref.rsplit("/", 1)[1] for ref in refs) == sorted(dashboard.ASSETS)
    for ref in refs:  # relative to /dashboard, so a proxy's path prefix is kept
        r = client.get(f"/{ref}")
        assert r.status_code == 200, ref
        assert r.headers["content-type"] == dashboard.ASSETS[ref.rsplit("/", 1)[1]]


def test_dashboard_files_name_no_external_resource_when_read():
    for name in (dashboard.PAGE, *dashboard.ASSETS):
        text = (dashboard.STATIC_DIR / name).read_text(encoding="utf-8")
        assert not re.search(r"https?://|@import|url\(", text), name


@pytest.mark.parametrize("name", ["dashboard.py", "..%2Fdashboard.py", "missing.js"])
def test_asset_route_answers_not_found_when_name_is_off_its_list(client, name):
    r = client.get(f"/dashboard/static/{name}")
    assert r.status_code == 404
    assert "def " not in r.text  # no source file leaks, whatever the path


def test_openapi_lists_the_page_but_not_its_assets_when_generated(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/dashboard"]["get"]["tags"] == ["dashboard"]
    assert not any(p.startswith("/dashboard/static") for p in paths)
