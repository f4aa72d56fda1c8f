"""The lifecycle API (spec §2): FastAPI app, routes, request models, rendering, errors."""

from .app import create_app

__all__ = ["create_app"]
