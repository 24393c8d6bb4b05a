"""The weights side of the protocol: list, register (blocking download), progress and cancel.

Registered weights live in qpsam's own registry (:mod:`qpsam.engines.weights`); the server adds what samapi clients
expect: every model type lists its ``default`` entry first (the QuPath extension selects the first entry and
fails when the list is empty), progress of the running download as ``{"message", "percent"}``, and a cancel
flag. Progress and the flag are files with fixed names under the server's home, so they work across
``--workers`` processes; nothing there is named after a client string.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..engines import weights as registry
from ..errors import WeightsError
from ..fileio import atomic_write
from ..sam import MODELS
from .echo import clip
from .shutdown import Shutdown

__all__ = ["WeightsService", "CheckpointRejected", "LOCAL_SCHEME"]

log = logging.getLogger("qpsam.server")

# Weights registered from a local file are listed under this pseudo-URL instead of their path, so that the
# server's file system is not shown to clients; the pseudo-URL resolves back to the registry record.
LOCAL_SCHEME = "qpsam-weights"


class CheckpointRejected(WeightsError):
    """A ``checkpoint_url`` the server will not load (not registered, not http(s)); the server answers 422."""


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n:.1f}GB"


class _CancelFlag:
    """What :func:`qpsam.engines.weights.download` polls between chunks: set when the cancel file exists or this
    server process stops (the file is shared by workers; a stopping worker cancels only its own download)."""

    def __init__(self, path: Path, shutdown: Shutdown):
        self.path = path
        self.shutdown = shutdown

    def is_set(self) -> bool:
        return self.shutdown.is_set() or self.path.exists()

    def set(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("cancel\n", encoding="utf-8")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class WeightsService:
    """Weights endpoints' logic on top of :mod:`qpsam.engines.weights`."""

    def __init__(self, home: Path, shutdown: Shutdown | None = None):
        self.home = home
        self._progress_path = home / "progress.json"
        self.shutdown = shutdown or Shutdown()
        self.cancel_flag = _CancelFlag(home / "cancel", self.shutdown)
        self._register_lock = threading.Lock()
        self._last_write = 0.0

    # ------------------------------------------------------------------ listing
    def _url_of(self, record: registry.WeightsRecord) -> str:
        if urlparse(record.source).scheme in ("http", "https"):
            return record.source
        return f"{LOCAL_SCHEME}:{record.type}/{record.name}"

    def list(self, model_type: str | None) -> list[dict[str, str]]:
        """``[{"type", "name", "url"}]`` for one type (``default`` first, then oldest first) or all types."""
        types = [model_type] if model_type else list(MODELS)
        out: list[dict[str, str]] = []
        for t in types:
            records = registry.list_weights(t)
            default = next((r for r in records if r.name == "default"), None)
            default_url = self._url_of(default) if default else registry.default_weights(t).url
            out.append({"type": t, "name": "default", "url": default_url})
            out.extend({"type": t, "name": r.name, "url": self._url_of(r)} for r in records if r.name != "default")
        return out

    # ------------------------------------------------------------------ resolving a request's checkpoint_url
    @staticmethod
    def is_default(model_type: str, checkpoint_url: str | None) -> bool:
        """Whether ``checkpoint_url`` names the default weights without a look at the registry: none, ``default``
        or the official URL (what the QuPath extension sends). Reads no file, so the event loop may ask."""
        return checkpoint_url in (None, "", "default") or checkpoint_url == registry.default_weights(model_type).url

    def resolve(self, model_type: str, checkpoint_url: str | None) -> str | None:
        """What to hand to the engine for ``checkpoint_url``: ``None`` (default weights) or a registry path.

        Only the default URL, registered weights and catalog URLs are accepted; anything else (a local path,
        ``file:``, an unknown URL) is rejected rather than fetched or opened.
        """
        if self.is_default(model_type, checkpoint_url):
            return None
        assert checkpoint_url is not None
        official = registry.default_weights(model_type)
        records = registry.list_weights(model_type)
        if checkpoint_url.startswith(LOCAL_SCHEME + ":"):
            wanted = checkpoint_url[len(LOCAL_SCHEME) + 1 :]
            for r in records:
                if f"{r.type}/{r.name}" == wanted:
                    return self._path_of(r)
            raise CheckpointRejected(f"checkpoint_url {clip(checkpoint_url)}: no such weights registered for {model_type}")
        default = next((r for r in records if r.name == "default"), None)
        if checkpoint_url == official.url or (default is not None and default.source == checkpoint_url):
            return None
        for r in records:
            if r.source == checkpoint_url:
                return self._path_of(r)
        for entry in registry.CATALOG.values():
            if entry.url == checkpoint_url and entry.type == model_type:
                return str(registry.resolve_weights(model_type, entry.name))
        # qpsam clients may name weights instead of giving their URL: registered names, then catalog names.
        for r in records:
            if r.name == checkpoint_url:
                return self._path_of(r)
        named = registry.CATALOG.get(checkpoint_url)
        if named is not None and named.type == model_type:
            return str(registry.resolve_weights(model_type, named.name))
        raise CheckpointRejected(
            f"checkpoint_url {clip(checkpoint_url)} is not registered for {model_type}: register it first "
            f"(POST /sam/weights/ with type, name and url), then select it"
        )

    @staticmethod
    def _path_of(record: registry.WeightsRecord) -> str:
        path = record.path
        if not path.is_file():
            raise WeightsError(f"weights {record.name!r} for {record.type} are registered but {path.name} is missing")
        return str(path)

    # ------------------------------------------------------------------ registration
    def register(self, model_type: str, name: str, url: str) -> str:
        """Register weights from ``url``; returns samapi's plain-text answer. Blocks until the download ends."""
        if urlparse(url).scheme not in ("http", "https"):
            raise CheckpointRejected(f"url {clip(url)} is not an http(s) URL; the server downloads weights only from URLs")
        records = registry.list_weights(model_type)
        listed = [("default", registry.default_weights(model_type).url)] + [(r.name, r.source) for r in records]
        for listed_name, listed_url in listed:
            if listed_name == name:
                return f"Model file with the name '{name}' already exists. Skip registration."
            if listed_url == url:
                return f"Model file with the url '{url}' already exists. Skip registration."
        if not self._register_lock.acquire(blocking=False):
            raise WeightsError("another registration is running on this server; wait for it or cancel it")
        try:
            self.cancel_flag.clear()
            self._write_progress(None, -1, force=True)
            try:
                registry.register_weights(
                    model_type, name, url, progress=self._progress, cancel=self.cancel_flag  # type: ignore[arg-type]
                )
            except WeightsError:
                self.shutdown.check()  # stopped, not cancelled by the client: 503
                if self.cancel_flag.is_set():
                    return f"Cancelled to register {name} ({url})."
                raise
            self._write_progress("done", 100, force=True)
            return f"{name} ({url}) is registered."
        finally:
            self.cancel_flag.clear()
            self._register_lock.release()

    def cancel(self) -> None:
        self.cancel_flag.set()

    # ------------------------------------------------------------------ progress
    def _progress(self, done: int, total: int) -> None:
        percent = int(done * 100 // total) if total else -1
        message = f"{_human(done)}/{_human(total)}" if total else _human(done)
        self._write_progress(message, percent)

    def _write_progress(self, message: str | None, percent: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < 0.1:
            return
        self._last_write = now
        self.home.mkdir(parents=True, exist_ok=True)
        atomic_write(self._progress_path, json.dumps({"message": message, "percent": percent}))

    def progress(self) -> dict[str, Any]:
        """The last progress written by a registration (``{"message": None, "percent": -1}`` before any)."""
        try:
            data = json.loads(self._progress_path.read_text(encoding="utf-8"))
            return {"message": data.get("message"), "percent": int(data.get("percent", -1))}
        except (OSError, ValueError, TypeError):
            return {"message": None, "percent": -1}
