"""The FastAPI application: settings and services in one :class:`~.state.ServerState`, the samapi endpoints
(:mod:`.routes`), error answers (:mod:`.handlers`) and the guard (token, body size, stopping) around them."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI

from .._version import __version__
from ..engines.base import Engine
from .guard import Guard
from .handlers import install_handlers
from .host import EngineFactory, ModelHost
from .logs import quiet_polling, quiet_upgrades
from .routes import ROUTERS
from .settings import Settings
from .shutdown import Shutdown
from .state import ServerState, install_state
from .uploads import UploadStore
from .weights_api import WeightsService

__all__ = ["create_app"]

# Lowest SAM3 confidence a request can ask for (thresholds below it act as it).
SAM3_FLOOR = 0.1


def _default_factory() -> tuple[EngineFactory, Callable[[int], Any]]:
    """The real engines (``qpsam.engines.load_engine``) and their shared embedding cache."""

    def factory(model_type: str, checkpoint_url: str | None, device: str, cache: Any) -> Engine:
        from ..engines import load_engine

        options: dict[str, Any] = {}
        if model_type == "sam3":
            # Each request brings its own threshold and is filtered here; the engine keeps everything above
            # SAM3_FLOOR so that lower request thresholds (the extension's default is 0.4) still see instances.
            options["confidence_threshold"] = SAM3_FLOOR
        return load_engine(model_type, checkpoint_url, device=device, cache=cache, **options)

    def make_cache(max_bytes: int) -> Any:
        from ..engines.cache import EmbeddingCache

        return EmbeddingCache(max_bytes=max_bytes)

    return factory, make_cache


def create_app(
    settings: Settings | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    cache: Any = None,
) -> FastAPI:
    """The samapi-compatible application.

    ``engine_factory`` and ``cache`` replace the real engines (``qpsam.engines.load_engine``) and their
    embedding cache; by default both are built lazily from ``qpsam.engines``.
    """
    settings = settings or Settings.from_env()
    assert settings.home is not None
    # Here rather than at import, so that every uvicorn worker process (which builds its own app) gets them.
    quiet_polling()
    quiet_upgrades()
    from PIL import Image

    # Our own pixel limit answers 413 first; PIL's decompression-bomb check must not fire below it.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < settings.max_image_pixels:
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    if engine_factory is None:
        engine_factory, make_cache = _default_factory()
        if cache is None:
            if settings.cache_bytes == 0:
                cache = False  # engines take False as "no cache" (None would mean their process-wide one)
            else:
                cache = make_cache(settings.cache_bytes)
    shutdown = Shutdown()
    state = ServerState(
        settings=settings,
        shutdown=shutdown,
        host=ModelHost(
            engine_factory, device=settings.device, max_models=settings.max_models, cache=cache, shutdown=shutdown
        ),
        weights=WeightsService(settings.home, shutdown=shutdown),
        uploads=UploadStore(
            settings.home / "videos", max_frames=settings.max_upload_frames, ttl_s=settings.upload_ttl_s
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        shutdown.follow_signals()  # inside uvicorn's own handling: SIGTERM sets our flag, then uvicorn's
        try:
            yield
        finally:
            shutdown.set()

    app = FastAPI(title="qpsam server (samapi protocol)", version=__version__, lifespan=lifespan)
    install_state(app, state)
    install_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(Guard, token=settings.token, max_body_bytes=settings.max_body_bytes, shutdown=shutdown)
    return app
