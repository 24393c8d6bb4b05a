"""The models a server process holds: loaded once, shared by every request, used under one lock.

A model is loaded the first time a request names it (model type + weights) and kept; at most
``Settings.max_models`` stay loaded, least recently used first out. Inference is serialised by one lock
(one accelerator per process; the engines are stateful: ``set_image`` then ``predict``). The embedding cache
is shared by all engines and requests, so re-sending an image (the extension does for every prompt on the
same view) skips the image encoder, and concurrent clients with different images each get their own.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Protocol, TypeVar

from ..engines.base import Engine
from ..errors import ModelError

__all__ = ["EngineFactory", "ModelHost", "ModelUnavailable"]

log = logging.getLogger("qpsam.server")

T = TypeVar("T")


class EngineFactory(Protocol):
    """Builds an engine: ``(model_type, checkpoint_url or None for the default, device, cache) -> Engine``."""

    def __call__(self, model_type: str, checkpoint_url: str | None, device: str, cache: Any) -> Engine: ...


class ModelUnavailable(ModelError):
    """A model that cannot be loaded in this process (missing package or weights); the server answers 503."""


class ModelHost:
    """Loaded engines keyed by (model type, checkpoint URL), the inference lock and the embedding cache."""

    def __init__(self, factory: EngineFactory, *, device: str = "auto", max_models: int = 2, cache: Any = None):
        self._factory = factory
        self.device = device
        self.cache = cache
        self._max_models = max_models
        self._engines: OrderedDict[tuple[str, str | None], Engine] = OrderedDict()
        self._load_lock = threading.Lock()
        self._inference_lock = threading.Lock()
        self.loads = 0  # how many times a model was built (one per model per process unless evicted)

    def engine(self, model_type: str, checkpoint_url: str | None) -> Engine:
        """The engine for this model, loading it on first use (only one thread loads)."""
        key = (model_type, checkpoint_url)
        with self._load_lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
            while len(self._engines) >= self._max_models:
                old, _ = self._engines.popitem(last=False)
                log.info("unloading %s (%s) to make room", old[0], old[1] or "default weights")
            log.info("loading %s (%s) on %s", model_type, checkpoint_url or "default weights", self.device)
            try:
                engine = self._factory(model_type, checkpoint_url, self.device, self.cache)
            except ModelUnavailable:
                raise
            except (ModelError, ImportError, FileNotFoundError) as exc:
                raise ModelUnavailable(f"model {model_type} ({checkpoint_url or 'default weights'}): {exc}") from exc
            self.loads += 1
            self._engines[key] = engine
            return engine

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` holding the inference lock (set_image + predict must not interleave)."""
        with self._inference_lock:
            return fn()

    @property
    def loaded(self) -> list[tuple[str, str | None]]:
        with self._load_lock:
            return list(self._engines)
