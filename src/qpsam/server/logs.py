"""Log filters that keep uvicorn's logs to what an operator needs."""

from __future__ import annotations

import logging

__all__ = ["quiet_polling", "quiet_upgrades"]


class _QuietPolling(logging.Filter):
    """Drops access-log lines of the endpoints clients poll every 100 ms during a registration."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "/sam/progress/" not in message and "/sam/weights/cancel/" not in message


def quiet_polling() -> None:
    """Filter the polled endpoints out of uvicorn's access log (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _QuietPolling) for f in access.filters):
        access.addFilter(_QuietPolling())


class _QuietUpgrades(logging.Filter):
    """Drops uvicorn's two warnings about upgrade offers it declines.

    Java's HttpClient (the QuPath extension) offers HTTP/2 with ``Connection: Upgrade, HTTP2-Settings`` and
    ``Upgrade: h2c`` on every plain-HTTP request; uvicorn answers over HTTP/1.1, as it should, but warned twice
    per request. This app has no WebSocket endpoint, so no upgrade is ever taken up and the warnings say nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(("Unsupported upgrade request", "No supported WebSocket library detected"))


def quiet_upgrades() -> None:
    """Filter uvicorn's warnings about declined HTTP/2 upgrade offers (once per process)."""
    errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietUpgrades) for f in errors.filters):
        errors.addFilter(_QuietUpgrades())
