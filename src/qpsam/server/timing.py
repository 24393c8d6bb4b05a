"""Where a request's time goes, answered as a ``Server-Timing`` header when the server runs with timing on.

Off by default (``Settings.timing``, ``qpsam serve --timing``): then every mark is a no-op and no header is sent.
On, each stage costs one clock read; a client (``benchmarks/bench_server.py``, a browser's network panel) reads
the stages back with :func:`parse_server_timing`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["StageTimer", "NO_TIMER", "parse_server_timing"]


@dataclass
class StageTimer:
    """Seconds per named stage of one request, in the order they ran (a stage named twice adds up)."""

    enabled: bool = True
    stages: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)

    def mark(self, stage: str, exclude: float = 0.0) -> None:
        """End ``stage`` now: it took the time since the previous mark (or since the timer was made), less
        ``exclude`` seconds that another stage accounts for (see :meth:`add`)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + max(0.0, now - self._last - exclude)
        self._last = now

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` measured elsewhere (another thread) to ``stage``; the clock is not moved."""
        if self.enabled:
            self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def header(self) -> dict[str, str]:
        """``{"Server-Timing": "read;dur=0.41, parse;dur=0.83, ..."}`` in milliseconds, or ``{}`` when off."""
        if not self.enabled or not self.stages:
            return {}
        return {"Server-Timing": ", ".join(f"{name};dur={s * 1000:.3f}" for name, s in self.stages.items())}


NO_TIMER = StageTimer(enabled=False)
"""A timer that records nothing (the default: timing off)."""


def parse_server_timing(value: str) -> dict[str, float]:
    """A ``Server-Timing`` header's ``name;dur=ms`` entries as ``{name: seconds}`` (entries without dur skipped)."""
    out: dict[str, float] = {}
    for entry in value.split(","):
        name, *params = (p.strip() for p in entry.split(";"))
        for param in params:
            key, _, number = param.partition("=")
            if name and key.strip() == "dur":
                try:
                    out[name] = float(number) / 1000.0
                except ValueError:
                    raise ValueError(f"Server-Timing entry {entry.strip()!r}: dur is not a number") from None
    return out
