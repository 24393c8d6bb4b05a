"""What a client asks before anything else: the protocol version and the server's health and features."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..._version import __version__
from ..routing import slash_twins
from ..state import AppState

__all__ = ["router", "PROTOCOL_VERSION", "FEATURES"]

# The samapi release whose wire format this server speaks; ``/sam/version/`` answers it with qpsam's version
# as a local label, so that clients comparing samapi versions keep working.
PROTOCOL_VERSION = "0.7.1"

# What a qpsam server does beyond samapi 0.7.1; clients read it from ``GET /sam/health/``.
FEATURES = (
    "quality-per-mask",  # each feature's quality is its own mask's (samapi shifts them by one)
    "pixel-corner-geometry",  # integer coordinates are pixel corners, holes and pieces kept
    "empty-masks-omitted",  # no feature for an empty mask (samapi sends an empty polygon)
    "embedding-cache",  # encoder output cached by image content, shared between requests
    "bearer-token",
    "token-path-prefix",  # /t/<token>/sam/ for clients that cannot send headers
)

router = APIRouter()
route = slash_twins(router)


@route("GET", "/sam/version/", response_class=PlainTextResponse)
def version() -> str:
    return f"{PROTOCOL_VERSION}+qpsam.{__version__}"


@route("GET", "/health")
@route("GET", "/sam/health/")
def health(state: AppState) -> dict[str, Any]:
    return {
        "status": "ok",
        "server": "qpsam",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "features": list(FEATURES),
        "token_required": state.settings.token is not None,
    }
