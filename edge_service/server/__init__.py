"""HTTP serving: the FastAPI app factory, its lifespan, routes and schemas."""

from edge_service.server.app import create_app

__all__ = ["create_app"]
