"""The FastAPI app factory. Resources live in the lifespan, never at import time."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

import edge_service
from edge_service.config import Settings
from edge_service.errors import EdgeServiceError, OverloadedError, UnauthorizedError
from edge_service.monitor.source import MonitorSource
from edge_service.server import dashboard, frames, kserve, ops
from edge_service.server.admission import AdmissionLimit
from edge_service.server.broadcast import Broadcaster
from edge_service.server.service import start_service
from edge_service.server.views import publish_live

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, source: MonitorSource | None = None) -> FastAPI:
    """Build the app; the catalog, engines and monitor start when the app does."""
    cfg = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Broadcaster()
        hub.bind(asyncio.get_running_loop())
        service = await run_in_threadpool(start_service, cfg, source, hub)
        publish_live(service)
        app.state.service = service
        try:
            yield
        finally:
            app.state.service = None
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="edge-service",
        version=edge_service.__version__,
        description="Context-adaptive inference: the most accurate variant the board affords.",
        lifespan=lifespan,
    )
    app.state.service = None
    for router in (frames.router, kserve.router, ops.router, dashboard.router):
        app.include_router(router)
    app.add_exception_handler(EdgeServiceError, _edge_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(AdmissionLimit, max_inflight=cfg.max_inflight, error_body=_error_body)
    app.openapi = _with_error_shapes(app)  # type: ignore[method-assign]
    return app


def _is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def _error_body(path: str, code: str, message: str) -> dict[str, str]:
    """``{"error": code, "detail": message}``; under /v2 the KServe protocol's
    ``{"error": message}`` (Triton clients print that field), with the code alongside."""
    # a lone surrogate (JSON's "\ud800") in an echoed name would make the body unencodable
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if _is_v2(path):
        return {"error": message, "code": code}
    return {"error": code, "detail": message}


async def _edge_error(request: Request, exc: EdgeServiceError) -> JSONResponse:
    """Every deliberate error as JSON, in the error shape of its API (`_error_body`)."""
    if exc.http_status >= 500 and not isinstance(exc, OverloadedError):
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
    headers = {}
    if isinstance(exc, OverloadedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    body = _error_body(request.url.path, exc.code, exc.message)
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A parameter or JSON body that does not fit the API: 422, in the error shape."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
        for err in exc.errors()[:5]
    )
    message = f"the request does not fit the API ({problems}); see /docs"
    return JSONResponse(_error_body(request.url.path, "invalid_request", message), 422)


_HTTP_CODES = {400: "bad_input", 404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method, unparsable body) in the error
    shape, not as ``{"detail": ...}``."""
    path = request.url.path
    if exc.status_code == 404:
        message = f"no endpoint at {path[:200]!r}; the API is listed at /docs"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {path[:200]!r}; use {allowed}"
    else:
        message = str(exc.detail)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return JSONResponse(
        _error_body(path, code, message), status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    message = f"{type(exc).__name__}: see the server log"
    return JSONResponse(_error_body(request.url.path, "internal_error", message), 500)


def _with_error_shapes(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` documenting 422 with the error shape the handler above sends,
    instead of FastAPI's own validation-error body."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path, operations in schema.get("paths", {}).items():
            model = "V2ErrorResponse" if _is_v2(path) else "ErrorResponse"
            for operation in operations.values():
                invalid = operation.get("responses", {}).get("422")
                if invalid is not None:
                    ref = {"$ref": f"#/components/schemas/{model}"}
                    invalid["content"] = {"application/json": {"schema": ref}}
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        return schema

    return openapi
