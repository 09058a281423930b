"""The operator dashboard: one static page at ``/dashboard`` and its two assets.

The page is plain HTML, CSS and JS kept in ``static/`` beside this module: no build step and
no external resource, since the board may be offline. It reads ``GET /v1/status`` and the
``GET /v1/events`` stream itself; nothing here touches the Service, so the page loads even
while the engines are still starting.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from edge_service.errors import EdgeServiceError, NotFoundError

router = APIRouter(tags=["dashboard"])

STATIC_DIR = Path(__file__).parent / "static"
PAGE = "dashboard.html"
# The only files served, with their types: a fixed list, so no part of a URL reaches the disk.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# Everything the page loads comes from this server; the policy makes the browser refuse (and
# report) anything else, instead of hanging on an offline board.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # an upgraded server's page shows at once
}


@router.get("/dashboard", response_class=HTMLResponse, summary="Live operator dashboard")
def dashboard() -> HTMLResponse:
    """A live page: power mode, served variant, latency against the budget, power and
    temperatures over time, and the adaptation events (open it in a browser)."""
    return HTMLResponse(_read(PAGE), headers=HEADERS)


@router.get("/dashboard/static/{name}", include_in_schema=False)
def dashboard_asset(name: str) -> Response:
    """The page's script and style sheet."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundError(
            f"no dashboard asset {name!r}; the page loads {', '.join(sorted(ASSETS))}"
        )
    return Response(_read(name), media_type=media_type, headers=HEADERS)


def _read(name: str) -> bytes:
    try:
        return (STATIC_DIR / name).read_bytes()
    except OSError as exc:
        raise EdgeServiceError(
            f"dashboard file {name} is missing from {STATIC_DIR}: reinstall edge-service "
            "(its package data must include server/static/*)"
        ) from exc
