"""Frames uploaded one by one for a video request (``POST /sam/upload/``), kept until the video request.

The client names a folder (``dirname``, a UUID from the QuPath extension) and each frame (``00.jpg``...). The
server never uses those strings as paths: the folder is the SHA-256 of ``dirname`` and a frame is stored
under the integer parsed from its name, so ``../`` or absolute names cannot escape the uploads folder.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
import time
from pathlib import Path

from ..errors import QpsamError
from ..fileio import atomic_write
from .echo import clip

__all__ = ["UploadStore", "BadUpload"]

_FRAME_NAME = re.compile(r"^(\d{1,9})\.(jpe?g|png|tiff?|bmp)$", re.IGNORECASE)


class BadUpload(QpsamError, ValueError):
    """An upload the server refuses (name, size or count); answered with 422 or 413."""


class UploadStore:
    """Uploaded frames under ``<home>/videos/<sha256(dirname)>/<index>.frame``."""

    def __init__(self, root: Path, *, max_frames: int = 2000, ttl_s: float = 24 * 3600.0):
        self.root = root
        self.max_frames = max_frames
        self.ttl_s = ttl_s
        self._lock = threading.Lock()

    def _folder(self, dirname: str) -> Path:
        if not dirname or len(dirname) > 256:
            raise BadUpload("dirname must be a non-empty string of at most 256 characters")
        return self.root / hashlib.sha256(dirname.encode("utf-8")).hexdigest()[:40]

    @staticmethod
    def frame_index(filename: str) -> int:
        """The frame number in a file name such as ``07.jpg`` (only the base name counts)."""
        base = re.split(r"[\\/]", filename or "")[-1]
        match = _FRAME_NAME.match(base)
        if not match:
            raise BadUpload(
                f"upload file name {clip(filename)} is not a frame name: expected digits and an image extension (07.jpg)"
            )
        return int(match.group(1))

    def add(self, dirname: str, filename: str, data: bytes) -> int:
        """Store one frame; returns its index."""
        index = self.frame_index(filename)
        if not data:
            raise BadUpload(f"upload {clip(filename)} is empty")
        folder = self._folder(dirname)
        with self._lock:
            self._sweep()
            folder.mkdir(parents=True, exist_ok=True)
            count = sum(1 for _ in folder.glob("*.frame"))
            target = folder / f"{index:09d}.frame"
            if count >= self.max_frames and not target.exists():
                raise BadUpload(f"folder {clip(dirname)} already holds {count} frames, the most this server accepts")
        # The whole frame is in memory already (one upload), so the shared writer can take it; its temporary
        # name ends in .tmp, never .frame, so a frame being written is never listed.
        atomic_write(target, data)
        return index

    def frames(self, dirname: str) -> list[bytes]:
        """The frames of a folder in index order (what the video request propagates through)."""
        folder = self._folder(dirname)
        files = sorted(folder.glob("*.frame")) if folder.is_dir() else []
        if not files:
            raise BadUpload(f"no frames were uploaded for dirname {clip(dirname)}")
        return [f.read_bytes() for f in files]

    def discard(self, dirname: str) -> None:
        shutil.rmtree(self._folder(dirname), ignore_errors=True)

    def _sweep(self) -> None:
        """Forget folders nobody asked for within the time to live (abandoned sequences)."""
        if not self.root.is_dir():
            return
        limit = time.time() - self.ttl_s
        for folder in self.root.iterdir():
            try:
                if folder.is_dir() and folder.stat().st_mtime < limit:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue
