"""The part every local engine with an image encoder shares: the embedding cache, the lock and the skeleton of
``set_image``/``predict``/``automask``.

A subclass (torch SAM1, SAM2, ONNX) supplies only its model: :meth:`CachedEngine._encode` runs the encoder and
makes the image current, :meth:`CachedEngine._restore` makes a cached encoding current, and
:meth:`CachedEngine._decode` answers one batch of prompts of one shape. So the cache key, the encoder counter that
tests and benchmarks read, and the locking are the same for every engine by construction.
"""

from __future__ import annotations

import abc
import threading
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ModelError
from ..sam import AutomaskParams, Mask, OutputType, Prompt, to_rgb8
from ..types import Progress
from .amg import generate_masks
from .base import check_prompts, prompt_batches
from .cache import CacheKey, Embedding, EmbeddingCache, default_cache, image_hash

__all__ = ["CachedEngine"]


class CachedEngine(abc.ABC):
    """An engine whose encoder output goes through an :class:`EmbeddingCache`. Not reentrant: hold :attr:`lock`
    around ``set_image`` + ``predict`` pairs when several threads share one engine.

    ``cache``: an :class:`EmbeddingCache` to share, None or True for the process-wide one, False for none.
    """

    model_type: str
    weights_sha256: str
    max_batch: int
    mask_threshold: float
    # Appended to the model type in cache keys, for an encoder whose output differs from the reference one.
    cache_tag = ""

    def __init__(self, cache: EmbeddingCache | None | bool) -> None:
        # an empty EmbeddingCache is falsy (it has a length): test identity, not truth
        if cache is None or cache is True:
            self.cache: EmbeddingCache | None = default_cache()
        else:
            self.cache = cache if isinstance(cache, EmbeddingCache) else None
        self.lock = threading.RLock()
        self.encoder_runs = 0  # how often the image encoder ran (cache misses)
        self.last_from_cache = False
        self._image_shape: tuple[int, int] | None = None
        self._image_key: str | None = None  # what set_image_from named the current image by

    # ------------------------------------------------------------------------------------ what a model supplies

    @abc.abstractmethod
    def _encode(self, rgb: np.ndarray) -> Embedding:
        """Run the encoder on ``rgb`` (H, W, 3 uint8), make it the current image, and return what to cache."""

    @abc.abstractmethod
    def _restore(self, embedding: Embedding, rgb: np.ndarray) -> None:
        """Make a cached encoding of ``rgb`` the current image."""

    @abc.abstractmethod
    def _image_ready(self) -> bool:
        """Whether the decoder holds an image (not after an encoder run that failed half-way)."""

    @abc.abstractmethod
    def _decode(
        self, prompts: Sequence[Prompt], indices: list[int], output: OutputType, results: list[list[Mask]]
    ) -> None:
        """Store in ``results[i]`` the masks of ``prompts[i]`` for ``i`` in ``indices`` (prompts of one shape)."""

    @abc.abstractmethod
    def decode_points(self, points: np.ndarray, multimask: bool) -> tuple[Any, Any]:
        """Decoder logits (N, K, H, W) and predicted IoU (N, K) for single foreground points (automask)."""

    def _batch_size(self, output: OutputType, height: int, width: int) -> int:
        """Prompts per :meth:`_decode` call on an image of this size."""
        return self.max_batch

    def _generate(self, image: np.ndarray, params: AutomaskParams, progress: Progress | None) -> list[Mask]:
        """Automask with the lock held: SAM's generator on :meth:`decode_points`."""
        return generate_masks(self, image, params, progress)

    # ---------------------------------------------------------------------------------------------- the face

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(height, width) of the current image, or None."""
        return self._image_shape

    def _cache_key(self, rgb: np.ndarray) -> CacheKey:
        """The embedding cache's key for an RGB uint8 image on this model and weights."""
        return CacheKey(f"{self.model_type}{self.cache_tag}", self.weights_sha256, image_hash(rgb))

    @property
    def image_key(self) -> str | None:
        """The key :meth:`set_image_from` made the current image current with (None after a plain set_image)."""
        return self._image_key

    def set_image_from(self, key: str, load: Callable[[], np.ndarray]) -> None:
        """Make the image that ``key`` names current, calling ``load`` for its pixels only when it is not current
        already. ``key`` must identify the pixels (a digest of the encoded file, say): the server's hot path,
        where another prompt on the same view then costs neither an image decode nor a hash."""
        with self.lock:
            if key == self._image_key and self._image_shape is not None and self._image_ready():
                self.last_from_cache = True
                return
            self.set_image(load())
            self._image_key = key

    def set_image(self, image: np.ndarray) -> None:
        """Make ``image`` current, running the encoder only when the cache lacks it."""
        rgb = to_rgb8(image)
        key = self._cache_key(rgb)
        with self.lock:
            self._image_key = None
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None:
                self._restore(cached, rgb)
                self.last_from_cache = True
            else:
                embedding = self._encode(rgb)
                self.encoder_runs += 1
                self.last_from_cache = False
                if self.cache is not None:
                    self.cache.put(key, embedding)
            self._image_shape = (int(rgb.shape[0]), int(rgb.shape[1]))

    def _require_image(self) -> tuple[int, int]:
        if self._image_shape is None or not self._image_ready():
            raise ModelError(f"{self.model_type}: no image set; call set_image(image) before predict")
        return self._image_shape

    def predict(
        self, prompts: Sequence[Prompt], output: OutputType | str = OutputType.SINGLE
    ) -> list[list[Mask]]:
        """Masks for each prompt on the current image, reduced by ``output``; batched by prompt shape."""
        output = OutputType.parse(output)
        prompts = check_prompts(prompts)
        results: list[list[Mask]] = [[] for _ in prompts]
        if not prompts:
            return results
        with self.lock:
            height, width = self._require_image()
            for part in prompt_batches(prompts, self._batch_size(output, height, width)):
                self._decode(prompts, part, output, results)
        return results

    def automask(
        self, image: np.ndarray, params: AutomaskParams = AutomaskParams(), progress: Progress | None = None
    ) -> list[Mask]:
        """Segment everything in ``image`` (which becomes the current image)."""
        with self.lock:
            self._image_key = None
            return self._generate(image, params, progress)
