"""The FastAPI app factory. Resources live in the lifespan, never at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

import edge_service
from edge_service.config import Settings
from edge_service.errors import EdgeServiceError
from edge_service.monitor.source import MonitorSource
from edge_service.server.routes import router
from edge_service.server.service import start_service

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, source: MonitorSource | None = None) -> FastAPI:
    """Build the app; the catalog, engines and monitor start when the app does."""
    cfg = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await run_in_threadpool(start_service, cfg, source)
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
    app.include_router(router)
    app.add_exception_handler(EdgeServiceError, _edge_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    return app


async def _edge_error(request: Request, exc: EdgeServiceError) -> JSONResponse:
    if exc.http_status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
    return JSONResponse({"error": exc.code, "detail": exc.message}, status_code=exc.http_status)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": "internal_error", "detail": f"{type(exc).__name__}: see the server log"},
        status_code=500,
    )
