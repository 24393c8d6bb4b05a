"""ASGI middleware in front of the app: bearer token, request size, and 503 while the server stops.

The token is checked on every path except version and health. The QuPath extension cannot send headers,
so the token is also accepted as a path prefix: a server URL of ``http://host:8000/t/<token>/sam/`` in the
extension reaches ``/sam/`` with the token checked (the prefix is removed before routing and logging).
Bodies above the limit get 413 before the app reads them (by ``Content-Length``) or while streaming.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException

from .shutdown import STOPPING_MESSAGE, Shutdown

__all__ = ["Guard", "OPEN_PATHS", "TOKEN_PREFIX", "ARRIVED"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

OPEN_PATHS = frozenset({"/sam/version/", "/sam/version", "/health", "/health/", "/sam/health/", "/sam/health"})
TOKEN_PREFIX = "/t/"
ARRIVED = "qpsam.arrived"  # scope key: perf_counter() when the request reached the guard


class _TooLarge(HTTPException):
    """Raised from ``receive`` while streaming; an HTTPException so that the app itself answers 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than this server accepts ({limit} bytes)")


async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Token and size checks for an ASGI app."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        token: str | None,
        max_body_bytes: int,
        shutdown: Shutdown | None = None,
    ):
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.shutdown = shutdown

    def _header_ok(self, scope: Scope) -> bool:
        assert self.token is not None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, given = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode()):
                    return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[ARRIVED] = time.perf_counter()  # where a request's stage timer starts (.timing)
        if self.shutdown is not None and self.shutdown.is_set():
            # Requests that arrive on open connections while the server stops are not started.
            await _send_json(send, 503, STOPPING_MESSAGE, [(b"connection", b"close")])
            return
        path: str = scope["path"]
        if path.startswith(TOKEN_PREFIX):
            given, _, rest = path[len(TOKEN_PREFIX) :].partition("/")
            if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _send_json(send, 401, "invalid token in the URL path", [(b"www-authenticate", b"Bearer")])
                return
            # Mutate the scope in place: the server's access log then shows the path without the token.
            scope["path"] = "/" + rest
            scope["raw_path"] = scope["path"].encode("utf-8")
        elif self.token is not None and path not in OPEN_PATHS and not self._header_ok(scope):
            await _send_json(
                send,
                401,
                "this server needs a token: send 'Authorization: Bearer <token>' or use the URL /t/<token>/sam/",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        length = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        if length is not None and length > self.max_body_bytes:
            await _send_json(
                send, 413, f"request body of {length} bytes is larger than this server accepts ({self.max_body_bytes})"
            )
            return

        received = 0
        started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(self.max_body_bytes)
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge as exc:
            if not started:
                await _send_json(send, 413, str(exc.detail))
