"""The engine interface every model family implements (local torch, onnx, remote samapi).

Engines know nothing about QuPath: they take an RGB image and prompts in that image's pixel
coordinates and return masks in the same frame.
"""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import ModelError
from ..sam import AutomaskParams, Mask, OutputType, Prompt, select_masks
from ..types import Progress

__all__ = [
    "Engine",
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
class Engine(Protocol):
    """What jobs and the server need from a model, local or remote."""

    model_type: str

    def set_image(self, image: np.ndarray) -> None:
        """Encode an image (H, W, 3) uint8 RGB; other inputs go through :func:`qpsam.sam.to_rgb8`."""

    def predict(self, prompts: Sequence[Prompt], output: OutputType = OutputType.SINGLE) -> list[list[Mask]]:
        """Masks for each prompt on the current image, already reduced by ``output``."""

    def automask(
        self, image: np.ndarray, params: AutomaskParams = AutomaskParams(), progress: Progress | None = None
    ) -> list[Mask]:
        """Segment everything in ``image``."""
