"""The models a server process holds: loaded once, shared by every request, used under one lock.

A model is loaded the first time a request names it (model type + weights) and kept; at most
``Settings.max_models`` stay loaded, least recently used first out. Inference runs one call at a time in one
daemon thread (one accelerator per process; the engines are stateful: ``set_image`` then ``predict``), and
loading in another: a request waits for its call, and when the server stops (:mod:`.shutdown`) waiting
requests give up at once while the running call is abandoned, so it cannot keep the process alive. The embedding cache
is shared by all engines and requests, so re-sending an image (the extension does for every prompt on the
same view) skips the image encoder, and concurrent clients with different images each get their own.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Protocol, TypeVar

from ..engines.base import Engine
from ..errors import ModelError
from .shutdown import ServerStopping, Shutdown

__all__ = ["EngineFactory", "ModelHost", "ModelUnavailable"]

log = logging.getLogger("qpsam.server")

T = TypeVar("T")


class EngineFactory(Protocol):
    """Builds an engine: ``(model_type, checkpoint_url or None for the default, device, cache) -> Engine``."""

    def __call__(self, model_type: str, checkpoint_url: str | None, device: str, cache: Any) -> Engine: ...


class ModelUnavailable(ModelError):
    """A model that cannot be loaded in this process (missing package or weights); the server answers 503."""


class _DaemonWorker:
    """One daemon thread running submitted calls in order; callers wait for theirs until the server stops."""

    def __init__(self, name: str, shutdown: Shutdown):
        self._name = name
        self._shutdown = shutdown
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def _loop(self) -> None:
        while True:
            fn, future = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up (the server is stopping)
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)

    def _submit(self, fn: Callable[[], Any]) -> Future:
        self._shutdown.check()
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        future: Future = Future()
        self._queue.put((fn, future))
        return future

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the worker thread; :class:`ServerStopping` as soon as the server stops."""
        future = self._submit(fn)
        while True:
            try:
                return future.result(timeout=0.05)
            except FutureTimeout:
                if self._shutdown.is_set():
                    future.cancel()
                    raise ServerStopping() from None

    async def call_async(self, fn: Callable[[], T]) -> T:
        """:meth:`call` for a coroutine: the event loop waits for ``fn`` without a thread of its own waiting."""
        future = self._submit(fn)
        waiter = asyncio.wrap_future(future)
        while True:
            try:
                done, _ = await asyncio.wait((waiter,), timeout=0.05)
            except asyncio.CancelledError:
                future.cancel()  # the request was abandoned: a call that has not started never does
                raise
            if done:
                return waiter.result()
            if self._shutdown.is_set():
                future.cancel()
                waiter.cancel()
                raise ServerStopping()


class ModelHost:
    """Loaded engines keyed by (model type, checkpoint URL), the inference lock and the embedding cache."""

    def __init__(
        self,
        factory: EngineFactory,
        *,
        device: str = "auto",
        max_models: int = 2,
        cache: Any = None,
        shutdown: Shutdown | None = None,
    ):
        self._factory = factory
        self.device = device
        self.cache = cache
        self._max_models = max_models
        self._engines: OrderedDict[tuple[str, str | None], Engine] = OrderedDict()
        self._load_lock = threading.Lock()
        self.shutdown = shutdown or Shutdown()
        self._loader = _DaemonWorker("qpsam-model-loader", self.shutdown)
        self._inference = _DaemonWorker("qpsam-inference", self.shutdown)
        self.loads = 0  # how many times a model was built (one per model per process unless evicted)

    def engine(self, model_type: str, checkpoint_url: str | None) -> Engine:
        """The engine for this model, loading it on first use (in the loader thread, one model at a time)."""
        key = (model_type, checkpoint_url)
        with self._load_lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
        return self._loader.call(lambda: self._load(key))

    def engine_if_loaded(self, model_type: str, checkpoint_url: str | None) -> Engine | None:
        """The engine for this model when it is loaded and no load holds the lock; None otherwise. Never waits,
        so the event loop may ask (and hand anything else to :meth:`engine` in a worker thread)."""
        if not self._load_lock.acquire(blocking=False):
            return None
        try:
            key = (model_type, checkpoint_url)
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
            return engine
        finally:
            self._load_lock.release()

    def _load(self, key: tuple[str, str | None]) -> Engine:
        model_type, checkpoint_url = key
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
        """Run ``fn`` in the inference thread, one call at a time (set_image + predict must not interleave).

        Raises :class:`ServerStopping` when the server stops before ``fn`` ends; long engine loops stop at their
        next progress call when they are given :meth:`check` as their ``progress``.
        """
        return self._inference.call(fn)

    async def run_async(self, fn: Callable[[], T]) -> T:
        """:meth:`run` awaited from the event loop: one thread hop to the inference thread and back instead of
        two (a request thread, then the inference thread), which a loaded CPU pays for in scheduling delays."""
        return await self._inference.call_async(fn)

    def check(self, *_: Any) -> None:
        """An engine ``progress`` callback that stops the work once the server stops."""
        self.shutdown.check()

    @property
    def loaded(self) -> list[tuple[str, str | None]]:
        with self._load_lock:
            return list(self._engines)
