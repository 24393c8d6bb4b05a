"""Run the server inside the current process, in a background thread (notebooks, tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from .state import ServerState

__all__ = ["ServerThread", "GRACE_S"]

# Seconds uvicorn waits for running requests after a stop before it cancels them (a backstop: the app's own
# stop flag ends model work sooner).
GRACE_S = 5


class ServerThread:
    """uvicorn serving ``app`` on ``host`` in a daemon thread; ``port=0`` picks a free port.

    Use as a context manager; :attr:`url` is the ``/sam/`` base URL once started::

        with ServerThread(create_app(Settings())) as server:
            client = SamapiClient(server.url)
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        log_level: str = "warning",
    ) -> None:
        import uvicorn

        # proto IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on accepted
        # sockets whose proto says TCP. With it on, a response written in two parts (head, then body) waited for
        # the client's delayed ACK: 40 ms on every request of a kept-alive connection.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        scheme = "https" if ssl_certfile else "http"
        self.url = f"{scheme}://{host}:{self.port}/sam/"
        self.app = app
        config = uvicorn.Config(
            app,
            log_level=log_level,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=GRACE_S,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        # No signal reaches a server in a thread: tell the app itself, so that running work stops and waiting
        # requests answer 503 instead of holding the shutdown.
        state = getattr(getattr(self.app, "state", None), "qpsam", None)
        if isinstance(state, ServerState):
            state.shutdown.set()
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
