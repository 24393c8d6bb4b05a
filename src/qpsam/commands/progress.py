"""Progress of a job on the command line: images done and the work inside the current image, on stderr.

On a terminal one line is redrawn in place (images done, the image in progress, its windows or tiles) and ended
with a newline before anything else is printed. Elsewhere (a log file, a pipe, CI) a plain line starting with
``qpsam:`` is written when an image is finished and, within an image, at most every few seconds
(``QPSAM_PROGRESS_SECONDS``, default 5), so a whole-slide run is never silent for minutes and its log lines
cannot be taken for results.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import IO, Any

__all__ = ["JobProgress"]

_REDRAW_SECONDS = 0.1  # on a terminal: at most ten redraws a second


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("QPSAM_PROGRESS_SECONDS", "5")))
    except ValueError:
        return 5.0


class JobProgress:
    """The ``progress`` and ``step_progress`` callbacks of a job, shown on ``stream`` (stderr by default)."""

    def __init__(self, stream: IO[str] | None = None, interval: float | None = None) -> None:
        self.stream: Any = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.interval = _interval() if interval is None else interval
        self.images_done = 0
        self.images_total: int | None = None
        self.image = ""
        self.detail = ""
        self._drawn = 0  # characters of the line on screen (terminal only)
        self._last = 0.0

    # -- callbacks ------------------------------------------------------------------------------------------
    def __call__(self, name: str, done: int, total: int) -> None:
        """An image is finished (``done`` of ``total``)."""
        self.images_done, self.images_total = done, total
        self.image, self.detail = "", ""
        if self.tty:
            self._draw(force=True)
        else:
            self._line(f"image {done}/{total} finished: {name}")

    def step(self, name: str, unit: str, done: int, total: int) -> None:
        """``done`` of ``total`` units (windows, tiles) of image ``name`` are segmented."""
        self.image, self.detail = name, f"{unit} {done}/{total}"
        now = time.monotonic()
        if self.tty:
            self._draw(force=done == total)
        elif done == total or now - self._last >= self.interval:
            position = f"image {self.images_done + 1}/{self.images_total}" if self.images_total else "image"
            self._line(f"{position} {name}: {self.detail}")

    def close(self) -> None:
        """End the progress line (terminal) so that what is printed next starts on a line of its own."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = 0

    # -- output ---------------------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        self._last = time.monotonic()
        self.stream.write(f"qpsam: {text}\n")
        self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < _REDRAW_SECONDS:
            return
        self._last = now
        total = self.images_total
        images = f"images {self.images_done}/{total}" if total else f"images {self.images_done}"
        text = images if not self.image else f"{images}  {self.image}: {self.detail}"
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        text = text[:width]
        self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)))
        self.stream.flush()
        self._drawn = len(text)
