"""Where the model work runs: in this process, or spread over a Dask cluster.

Work is split into units (a detection window, an automask tile) that need only an engine spec, a way to open the
image, and plain values; each unit returns geometries and scores. Workers load a model once per process and keep
it (:func:`engine_for`); only the driver writes the project.

What travels to a worker is small: the :class:`EngineSpec` (model type, weights as a path, URL or name), the image
as project path and entry id, and the window or tile. Never the model: each worker resolves the weights itself
(a file on a filesystem it shares with the client, or a URL or catalog name downloaded once into its own cache)
and builds the engine on its first unit; later units find it in :data:`_ENGINES`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from qpsam.engines.base import LockingEngine
from qpsam.errors import JobError
from qpsam.sam import DEFAULT_MODEL

__all__ = ["EngineSpec", "engine_for", "engine_lock", "Executor", "LocalExecutor", "DaskExecutor", "make_executor"]


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to build an engine in any process: local model or samapi server."""

    model_type: str = DEFAULT_MODEL
    weights: str | None = None
    device: str = "auto"
    engine: str = "auto"  # auto | torch | onnx | openvino
    server: str | None = None
    token: str | None = None
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (local engines; auto: bf16/fp16 on CUDA, fp32 elsewhere)

    def __post_init__(self) -> None:
        if str(self.precision).lower() not in PRECISIONS:
            raise JobError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def load(self) -> Any:
        """Build the engine (local or remote) this spec describes."""
        if self.server:
            from qpsam.engines.remote import SamapiClient

            return SamapiClient(self.server, token=self.token, model_type=self.model_type, weights=self.weights)
        from qpsam.engines import load_engine

        options: dict[str, Any] = {} if self.precision == "auto" else {"precision": self.precision}
        return load_engine(self.model_type, weights=self.weights, device=self.device, engine=self.engine, **options)

    def portable(self) -> EngineSpec:
        """This spec as another process reads it: a weights file named relative to this process's working folder
        (or to ``~``) becomes an absolute path. Names and URLs stay: each process resolves them in its own cache."""
        if self.server or not self.weights or "://" in str(self.weights):
            return self
        path = Path(self.weights).expanduser()
        if not path.is_file():
            return self  # a registered or catalog name
        return replace(self, weights=os.path.abspath(path))


PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_ENGINES: dict[EngineSpec, Any] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(spec: EngineSpec) -> Any:
    """The engine for ``spec`` in this process, loaded on first use and kept (one model load per worker)."""
    with _ENGINES_LOCK:
        if spec not in _ENGINES:
            _ENGINES[spec] = spec.load()
        return _ENGINES[spec]


_OWN_LOCKS: dict[int, threading.RLock] = {}


def engine_lock(engine: Any) -> Any:
    """The lock to hold from ``set_image`` to the last ``predict`` on ``engine``: the threads of one Dask worker
    share its one model. The engine's own re-entrant ``lock`` where it has one, else one kept here for it."""
    if isinstance(engine, LockingEngine):
        return engine.lock
    with _ENGINES_LOCK:
        return _OWN_LOCKS.setdefault(id(engine), threading.RLock())


class Executor(Protocol):
    """Runs ``fn(*args)`` for each argument tuple and yields ``(index, result or exception)`` as they finish."""

    def run(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]: ...


@dataclass
class LocalExecutor:
    """One process, one unit after the other (the default)."""

    def run(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(jobs):
            try:
                yield i, fn(*args)
            except Exception as exc:  # noqa: BLE001 - reported per unit by the caller
                yield i, exc


@dataclass
class DaskExecutor:
    """Units submitted to a ``dask.distributed`` cluster; results come back as they complete."""

    address: str | None = None
    client: Any = None
    _own: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        try:
            from dask.distributed import Client
        except ImportError as exc:
            raise JobError("the Dask executor needs dask.distributed: pip install 'qpsam[dask]'") from exc
        if self.client is None:
            if not self.address:
                raise JobError("the Dask executor needs a scheduler address (dask://HOST:PORT) or a client")
            try:
                # not the default client: a user's own Dask code in this process keeps its scheduler
                self.client = Client(self.address, timeout="10s", set_as_default=False)
            except OSError as exc:
                raise JobError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from exc
            self._own = True

    def run(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        from dask.distributed import as_completed

        # A worker started in another folder must find the same weights file as this process.
        jobs = [tuple(a.portable() if isinstance(a, EngineSpec) else a for a in args) for args in jobs]
        futures: list[Any] = [  # dask's futures (keyed), not concurrent.futures'
            self.client.submit(fn, *args, pure=False) for args in jobs]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures, loop=self.client.loop):  # our client need not be the default one
            try:
                yield index[future.key], future.result()
            except Exception as exc:  # noqa: BLE001
                yield index[future.key], exc

    def close(self) -> None:
        if self._own and self.client is not None:
            self.client.close()


def _scheduler_address(spec: str) -> str:
    # Checked here: Dask's own errors for these name neither the option nor the value, or wait 10 s to time out.
    wrong = f"--executor must be 'local' or 'dask://HOST:PORT', got {spec!r}"
    if not spec.startswith("dask://"):
        raise JobError(wrong)
    host, sep, port = spec[len("dask://"):].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise JobError(wrong)
    return f"tcp://{host}:{port}"


def make_executor(spec: str | Any | None) -> LocalExecutor | DaskExecutor:
    """``None``/``"local"`` -> local; ``"dask://HOST:PORT"`` -> Dask; a ``dask.distributed.Client`` -> Dask."""
    if spec is None or spec == "local":
        return LocalExecutor()
    if isinstance(spec, (LocalExecutor, DaskExecutor)):
        return spec
    if isinstance(spec, str):
        return DaskExecutor(address=_scheduler_address(spec))
    return DaskExecutor(client=spec)
