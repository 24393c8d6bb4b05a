"""What every route shares: one typed object on ``app.state``, handed to handlers as a FastAPI dependency."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import numpy as np
from fastapi import Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from ..engines.base import Engine
from .guard import ARRIVED
from .host import ModelHost
from .images import decode_b64_image
from .settings import Settings
from .shutdown import Shutdown
from .timing import NO_TIMER, StageTimer
from .uploads import UploadStore
from .weights_api import WeightsService

__all__ = ["ServerState", "AppState", "app_state", "image_key", "install_state"]

# samapi's SAM3 prompt state: boxes per (model type, checkpoint_url), accumulated until ``reset_prompts``.
Sam3Boxes = dict[tuple[str, Optional[str]], dict[str, Any]]


@dataclass
class ServerState:
    """The settings and services of one application (one per uvicorn worker process)."""

    settings: Settings
    shutdown: Shutdown
    host: ModelHost
    weights: WeightsService
    uploads: UploadStore
    sam3_state: Sam3Boxes = field(default_factory=dict)
    images_decoded: int = 0  # requests whose image had to be decoded (the hot path skips it)

    def decode(self, b64: str, field: str = "b64img") -> np.ndarray:
        """A base64 image of a request, within this server's pixel limit."""
        image = decode_b64_image(b64, field=field, max_pixels=self.settings.max_image_pixels)
        self.images_decoded += 1
        return image

    def timer(self, request: Request) -> StageTimer:
        """A request's stage timer, running from when the request reached the guard with ``Settings.timing``;
        else one that records nothing."""
        if not self.settings.timing:
            return NO_TIMER
        arrived = request.scope.get(ARRIVED)
        return StageTimer(_last=arrived) if isinstance(arrived, float) else StageTimer()

    def engine_for(self, model_type: str, checkpoint_url: str | None) -> Engine:
        """The loaded engine for a request's model and ``checkpoint_url`` (checked against the weights registry)."""
        return self.host.engine(model_type, self.weights.resolve(model_type, checkpoint_url))

    async def engine_async(self, model_type: str, checkpoint_url: str | None) -> Engine:
        """:meth:`engine_for` from the event loop: a loaded engine with the default weights at once, anything
        that may read the weights registry or load a model in a worker thread."""
        if self.weights.is_default(model_type, checkpoint_url):
            engine = self.host.engine_if_loaded(model_type, None)
            if engine is not None:
                return engine
        return await run_in_threadpool(self.engine_for, model_type, checkpoint_url)


def image_key(b64: str) -> str:
    """A key of a request's image as sent (its base64 text): equal keys mean equal bytes, so equal pixels.

    One pass of BLAKE2b over the text's bytes (for ASCII base64 the encode is a plain copy); 160 bits keep
    accidental collisions out of reach, and the key is only ever compared with keys of this process."""
    return hashlib.blake2b(b64.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()


def install_state(app: FastAPI, state: ServerState) -> None:
    """Make ``state`` the one every route of ``app`` is handed."""
    app.state.qpsam = state


def app_state(app: FastAPI) -> ServerState:
    """The state :func:`install_state` put on ``app`` (tests and :class:`~.thread.ServerThread` read it)."""
    state = app.state.qpsam
    assert isinstance(state, ServerState)
    return state


async def _request_state(request: Request) -> ServerState:
    # async: FastAPI runs a sync dependency in its thread pool, a hop per request for a plain attribute read.
    return app_state(request.app)


AppState = Annotated[ServerState, Depends(_request_state)]
