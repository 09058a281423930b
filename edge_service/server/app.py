"""The FastAPI app factory. Resources live in the lifespan, never at import time."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

import edge_service
from edge_service.config import Settings
from edge_service.errors import EdgeServiceError, OverloadedError, UnauthorizedError
from edge_service.monitor.source import MonitorSource
from edge_service.server import dashboard, frames, kserve, ops
from edge_service.server.broadcast import Broadcaster
from edge_service.server.service import start_service

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, source: MonitorSource | None = None) -> FastAPI:
    """Build the app; the catalog, engines and monitor start when the app does."""
    cfg = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Broadcaster()
        hub.bind(asyncio.get_running_loop())
        service = await run_in_threadpool(start_service, cfg, source, hub)
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
    app.add_exception_handler(Exception, _unexpected)
    return app


async def _edge_error(request: Request, exc: EdgeServiceError) -> JSONResponse:
    """Every deliberate error as JSON: ``{"error": code, "detail": message}``. Under /v2 the
    KServe protocol's ``{"error": message}`` is kept (Triton clients print that field),
    with the code alongside."""
    if exc.http_status >= 500 and not isinstance(exc, OverloadedError):
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
    headers = {}
    if isinstance(exc, OverloadedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    if request.url.path.startswith("/v2/"):
        body = {"error": exc.message, "code": exc.code}
    else:
        body = {"error": exc.code, "detail": exc.message}
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": "internal_error", "detail": f"{type(exc).__name__}: see the server log"},
        status_code=500,
    )
