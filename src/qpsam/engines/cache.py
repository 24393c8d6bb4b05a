"""Embedding cache: image-encoder output keyed by (model type, weights SHA-256, image content hash).

The encoder is the expensive part of SAM; the prompt decoder is cheap. Keeping the encoder's output for the
images (or tiles) seen recently means that new prompts on them only run the decoder. The cache is an in-memory
LRU bounded in bytes, optionally backed by a folder on disk, and safe to share between threads (the server
shares one across requests).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..fileio import atomic_write

__all__ = ["CacheKey", "Embedding", "EmbeddingCache", "image_hash", "CacheStats", "default_cache"]


class CacheKey(NamedTuple):
    """What an embedding depends on: the model type, the exact weights and the exact pixels."""

    model_type: str
    weights_sha256: str
    image_hash: str

    def filename(self) -> str:
        return f"{self.model_type}-{self.weights_sha256[:16]}-{self.image_hash}.pt"


def image_hash(image: np.ndarray) -> str:
    """A content hash of an image array (shape, dtype and pixels)."""
    arr = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    digest.update(arr.data.cast("B"))
    return digest.hexdigest()


@dataclass
class Embedding:
    """An encoder output: named tensors (torch tensors or numpy arrays) and small metadata (sizes)."""

    tensors: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        total = 0
        for value in _flatten(self.tensors):
            if hasattr(value, "element_size"):
                total += int(value.numel() * value.element_size())
            else:
                total += int(np.asarray(value).nbytes)
        return total


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [v for item in value.values() for v in _flatten(item)]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flatten(item)]
    return [value]


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    disk_hits: int
    entries: int
    nbytes: int
    max_bytes: int


class EmbeddingCache:
    """A thread-safe LRU of :class:`Embedding` bounded in bytes, optionally mirrored to ``directory``.

    ``max_bytes`` bounds memory (default 1 GiB: about 250 SAM1 embeddings); ``disk_max_bytes`` bounds the
    folder (oldest files go first). Disk entries are written atomically and read with ``weights_only``.
    """

    def __init__(
        self,
        max_bytes: int = 1 << 30,
        directory: str | os.PathLike[str] | None = None,
        disk_max_bytes: int = 8 << 30,
    ) -> None:
        self.max_bytes = int(max_bytes)
        self.directory = Path(directory) if directory is not None else None
        self.disk_max_bytes = int(disk_max_bytes)
        self._entries: OrderedDict[CacheKey, tuple[Embedding, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._disk_hits = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, self._disk_hits, len(self._entries), self._bytes, self.max_bytes
            )

    def get(self, key: CacheKey) -> Embedding | None:
        """The embedding for ``key`` (marked as recently used), from memory or disk, or None."""
        with self._lock:
            item = self._entries.get(key)
            if item is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return item[0]
        embedding = self._load(key)
        with self._lock:
            if embedding is None:
                self._misses += 1
                return None
            self._disk_hits += 1
        self._insert(key, embedding)
        return embedding

    def put(self, key: CacheKey, embedding: Embedding) -> None:
        """Store an embedding (in memory and, with a directory, on disk)."""
        self._insert(key, embedding)
        if self.directory is not None:
            self._save(key, embedding)

    def clear(self) -> None:
        """Forget every in-memory entry (disk files stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _insert(self, key: CacheKey, embedding: Embedding) -> None:
        size = embedding.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (embedding, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def _load(self, key: CacheKey) -> Embedding | None:
        if self.directory is None:
            return None
        path = self.directory / key.filename()
        if not path.is_file():
            return None
        import torch

        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            embedding = Embedding(dict(data["tensors"]), dict(data["meta"]))
        except Exception:  # noqa: BLE001 - a damaged cache file is a miss, and is removed
            path.unlink(missing_ok=True)
            return None
        os.utime(path)
        return embedding

    def _save(self, key: CacheKey, embedding: Embedding) -> None:
        import torch

        assert self.directory is not None
        buffer = io.BytesIO()
        torch.save({"tensors": _to_cpu(embedding.tensors), "meta": embedding.meta}, buffer)
        # no read-back: a damaged entry is a cache miss when it is loaded, and is removed then
        atomic_write(self.directory / key.filename(), buffer.getvalue(), verify=False)
        self._prune_disk()

    def _prune_disk(self) -> None:
        assert self.directory is not None
        files = []
        for path in self.directory.glob("*.pt"):
            try:
                st = path.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.disk_max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size


_DEFAULT_CACHE: EmbeddingCache | None = None
_DEFAULT_CACHE_LOCK = threading.Lock()


def default_cache() -> EmbeddingCache:
    """The process-wide embedding cache engines share when given none (1 GiB in memory)."""
    global _DEFAULT_CACHE
    with _DEFAULT_CACHE_LOCK:
        if _DEFAULT_CACHE is None:
            _DEFAULT_CACHE = EmbeddingCache()
        return _DEFAULT_CACHE


def _to_cpu(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if hasattr(value, "detach"):
        return value.detach().to("cpu")
    if isinstance(value, np.ndarray):  # the onnx engine's arrays: stored as tensors, which load weights_only
        import torch

        return torch.from_numpy(np.ascontiguousarray(value))
    return value
