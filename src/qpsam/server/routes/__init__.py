"""The samapi endpoints, one router per concern; each handler decodes the request, calls the engine and answers
GeoJSON features. They share the application's :class:`~qpsam.server.state.ServerState`.

Handlers carry no docstrings: FastAPI would publish them in the OpenAPI schema, which stays samapi's.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import automask, info, prompts, uploads, video, weights

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    info.router, weights.router, prompts.router, automask.router, uploads.router, video.router,
)
