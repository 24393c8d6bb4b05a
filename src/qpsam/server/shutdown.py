"""Graceful stop: a flag set on SIGTERM/SIGINT that running work, waiting requests and new requests check.

uvicorn alone waits for every running request before it exits, and a request running a model in a worker
thread cannot be cancelled, so a long automask kept the process alive for its whole duration. With the flag
set, long loops stop at their next progress call, requests waiting for a model answer 503 at once, and the
work that cannot be interrupted is abandoned (it runs in a daemon thread, see :mod:`qpsam.server.host`).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from ..errors import QpsamError

__all__ = ["ServerStopping", "Shutdown"]

STOPPING_MESSAGE = "the server is shutting down; send the request again once it is back"


class ServerStopping(QpsamError):
    """The server is stopping: the request is not served (the server answers 503)."""

    def __init__(self, message: str = STOPPING_MESSAGE):
        super().__init__(message)


class Shutdown:
    """The stop flag of one server process."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def check(self, *_: Any) -> None:
        """Raise :class:`ServerStopping` once the flag is set; usable as an engine ``progress`` callback."""
        if self._event.is_set():
            raise ServerStopping()

    def follow_signals(self) -> None:
        """Set the flag on SIGTERM and SIGINT, then let the handlers already installed (uvicorn's) run.

        Called when the application starts, inside the server's own signal handling; only the main thread can
        install handlers, so elsewhere (a server in a thread) the caller sets the flag itself.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                self.set()
                if callable(previous):
                    previous(signum, frame)
                elif previous == signal.SIG_DFL:
                    signal.signal(signum, signal.SIG_DFL)
                    signal.raise_signal(signum)

            signal.signal(sig, handler)
