"""The engine interface every model family implements (local torch, onnx, remote samapi).

Engines know nothing about QuPath: they take an RGB image and prompts in that image's pixel
coordinates and return masks in the same frame.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import ModelError
from ..sam import AutomaskParams, Mask, OutputType, Prompt, select_masks
from ..types import Progress
from .cache import EmbeddingCache

__all__ = [
    "Engine",
    "NamedModel",
    "LocalWeights",
    "LockingEngine",
    "VideoEngine",
    "ConceptEngine",
    "ConceptVideoEngine",
    "BatchEncoder",
    "KeyedImages",
    "video_objects",
    "check_prompts",
    "prompt_batches",
    "collect_masks",
]


def check_prompts(prompts: Sequence[object]) -> list[Prompt]:
    """The prompts as a list, or a :class:`ModelError` naming the first one that is not a :class:`Prompt`."""
    out = list(prompts)
    for i, prompt in enumerate(out):
        if not isinstance(prompt, Prompt):
            raise ModelError(f"prompt {i} is a {type(prompt).__name__}, not a qpsam Prompt")
    return out  # type: ignore[return-value]


def prompt_batches(prompts: Sequence[Prompt], size: int) -> Iterator[list[int]]:
    """Indices of prompts that can share one decoder call: same shape (box or not, number of points), at most
    ``size`` at a time, because a decoder batch is one tensor."""
    groups: dict[tuple[bool, int], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault((prompt.box is not None, len(prompt.points)), []).append(i)
    step = max(1, int(size))
    for indices in groups.values():
        for start in range(0, len(indices), step):
            yield indices[start : start + step]


def collect_masks(
    results: list[list[Mask]],
    indices: Sequence[int],
    masks: np.ndarray,
    scores: np.ndarray,
    logits: np.ndarray | None,
    output: OutputType,
) -> None:
    """Store the masks of one decoder batch (rows answer ``indices``) in ``results``, reduced by ``output``.

    Arrays are (rows, K, ...); kept masks are copied so that they do not hold the whole batch in memory.
    """
    for row, index in enumerate(indices):
        candidates = [
            Mask(masks[row, j], float(scores[row, j]), index, None if logits is None else logits[row, j])
            for j in range(masks.shape[1])
        ]
        results[index] = [
            Mask(m.mask.copy(), m.score, index, None if m.logits is None else m.logits.copy())
            for m in select_masks(candidates, output)
        ]


@runtime_checkable
class NamedModel(Protocol):
    """Anything that says which model type it runs (every engine, and the stand-ins tests give jobs)."""

    model_type: str


@runtime_checkable
class Engine(NamedModel, Protocol):
    """What jobs and the server need from a model, local or remote."""

    def set_image(self, image: np.ndarray) -> None:
        """Encode an image (H, W, 3) uint8 RGB; other inputs go through :func:`qpsam.sam.to_rgb8`."""

    def predict(self, prompts: Sequence[Prompt], output: OutputType = OutputType.SINGLE) -> list[list[Mask]]:
        """Masks for each prompt on the current image, already reduced by ``output``."""

    def automask(
        self, image: np.ndarray, params: AutomaskParams = AutomaskParams(), progress: Progress | None = None
    ) -> list[Mask]:
        """Segment everything in ``image``."""


# The abilities below are optional: an engine has one when it has its members, which jobs and the server test with
# isinstance. Each Protocol holds only its own members, so that a stand-in with just that ability qualifies.

Box = tuple[float, float, float, float]
VideoMasks = dict[int, dict[Any, Mask]]


@runtime_checkable
class LocalWeights(Protocol):
    """An engine that loaded a weights file of its own (the local ones; a remote engine names a URL instead)."""

    weights_path: Path


@runtime_checkable
class LockingEngine(Protocol):
    """An engine with its own re-entrant lock, to hold from ``set_image`` to the last ``predict``."""

    lock: AbstractContextManager[Any]


@runtime_checkable
class VideoEngine(Protocol):
    """Video propagation (SAM2): track the objects prompted on some frames through all of them."""

    def propagate(
        self,
        frames: Sequence[np.ndarray],
        prompts: Mapping[int, Sequence[Prompt]],
        *,
        start_frame: int | None = None,
        max_frames: int | None = None,
        reverse: bool = True,
        progress: Progress | None = None,
    ) -> VideoMasks:
        """``{frame: {prompt key: Mask}}`` for the frames where an object was found."""


def video_objects(prompts: Mapping[int, Sequence[Prompt]]) -> tuple[list[tuple[int, int, Prompt]], dict[int, Any]]:
    """The prompts of a video as ``(frame, object id, prompt)`` in frame order, and the key of each object id.

    A prompt's ``key`` names its object (the same key on several frames is one object); a prompt without a key is
    an object of its own. Ids count from 0 in the order objects first appear. Every :class:`VideoEngine` keys its
    masks this way, local or remote.
    """
    ids: dict[Any, int] = {}
    plan = []
    for frame, frame_prompts in sorted(prompts.items()):
        for j, prompt in enumerate(frame_prompts):
            key = prompt.key if prompt.key is not None else ("prompt", int(frame), j)
            plan.append((int(frame), ids.setdefault(key, len(ids)), prompt))
    return plan, {v: k for k, v in ids.items()}


@runtime_checkable
class ConceptEngine(Protocol):
    """Concept prompts (SAM3): every instance of a text phrase and/or exemplar boxes on the current image."""

    def set_image(self, image: np.ndarray) -> None:
        """Make ``image`` current."""

    def segment(
        self, text: str | None = None, positive_boxes: Sequence[Box] = (), negative_boxes: Sequence[Box] = ()
    ) -> list[Mask]:
        """Every instance found, each mask with its own score."""


@runtime_checkable
class ConceptVideoEngine(Protocol):
    """Concept prompts through a video (SAM3 video): per frame, objects given by text and boxes."""

    def propagate_concept(
        self,
        frames: Sequence[np.ndarray],
        prompts: Mapping[int, Sequence[Mapping[str, Any]]],
        *,
        start_frame: int | None = None,
        max_frames: int | None = None,
    ) -> VideoMasks:
        """``{frame: {obj_id: Mask}}`` as :meth:`VideoEngine.propagate` returns."""


@runtime_checkable
class KeyedImages(Protocol):
    """Images named by a key of their encoded bytes: a repeated key skips the decode and the content hash."""

    @property
    def image_key(self) -> str | None:
        """The key of the current image, if it was set by key."""

    def set_image_from(self, key: str, load: Callable[[], np.ndarray]) -> None:
        """Make the image ``key`` names current; ``load`` gives its pixels when it is not current already."""


@runtime_checkable
class BatchEncoder(Protocol):
    """Batched encoding: several images per encoder call, into the embedding cache that ``set_image`` reads."""

    encode_batch_size: int
    cache: EmbeddingCache | None

    def encode_batch(self, images: Sequence[np.ndarray]) -> int:
        """Encode the images the cache lacks; returns how many were encoded."""
