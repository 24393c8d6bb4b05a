"""The engine interface every model family implements (local torch, onnx, remote samapi).

Engines know nothing about QuPath: they take an RGB image and prompts in that image's pixel
coordinates and return masks in the same frame.
"""

from __future__ import annotations

import enum
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import ModelError
from .cache import EmbeddingCache

__all__ = [
    "OutputType",
    "Prompt",
    "Mask",
    "AutomaskParams",
    "Engine",
    "NamedModel",
    "LocalWeights",
    "LockingEngine",
    "VideoEngine",
    "ConceptEngine",
    "ConceptVideoEngine",
    "BatchEncoder",
    "select_masks",
    "check_prompts",
    "prompt_batches",
    "collect_masks",
    "to_rgb8",
    "MODEL_TYPES",
    "SAM1_TYPES",
    "SAM2_TYPES",
]

SAM1_TYPES = ("vit_h", "vit_l", "vit_b", "vit_t")
SAM2_TYPES = ("sam2_l", "sam2_bp", "sam2_s", "sam2_t")
MODEL_TYPES = SAM1_TYPES + SAM2_TYPES + ("sam3",)

Progress = Callable[[int, int], None]


class OutputType(str, enum.Enum):
    """Which masks to keep per prompt. CLI spelling as value; samapi's label as :attr:`label`."""

    SINGLE = "single"
    MULTI_ALL = "multi-all"
    MULTI_LARGEST = "multi-largest"
    MULTI_SMALLEST = "multi-smallest"
    MULTI_BEST = "multi-best"

    @property
    def multimask(self) -> bool:
        return self is not OutputType.SINGLE

    @property
    def label(self) -> str:
        """The string samapi and the QuPath extension use (``SAMOutput.toString()``)."""
        return _LABELS[self]

    @property
    def extension_name(self) -> str:
        """The ``SAMOutput`` enum constant of qupath-extension-sam."""
        return _EXT_NAMES[self]

    @classmethod
    def parse(cls, value: "str | OutputType") -> "OutputType":
        """Accept the CLI value, the samapi label or the extension's constant name."""
        if isinstance(value, OutputType):
            return value
        for member in cls:
            if value in (member.value, member.label, member.extension_name):
                return member
        choices = ", ".join(m.value for m in cls)
        raise ModelError(f"unknown output type {value!r}; choose one of {choices}")


_LABELS = {
    OutputType.SINGLE: "Single mask",
    OutputType.MULTI_ALL: "Multi-mask (all)",
    OutputType.MULTI_LARGEST: "Multi-mask (largest)",
    OutputType.MULTI_SMALLEST: "Multi-mask (smallest)",
    OutputType.MULTI_BEST: "Multi-mask (best quality)",
}
_EXT_NAMES = {
    OutputType.SINGLE: "SINGLE_MASK",
    OutputType.MULTI_ALL: "MULTI_ALL",
    OutputType.MULTI_LARGEST: "MULTI_LARGEST",
    OutputType.MULTI_SMALLEST: "MULTI_SMALLEST",
    OutputType.MULTI_BEST: "MULTI_BEST_QUALITY",
}


@dataclass(frozen=True)
class Prompt:
    """One SAM query: an optional XYXY box and labelled points (1 foreground, 0 background).

    Coordinates are pixels of the image given to the engine. ``key`` is an opaque tag the caller
    uses to find its prompt object again (qpsam puts the QuPath object's id there).
    """

    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    key: object = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple((float(x), float(y)) for x, y in self.points))
        object.__setattr__(self, "labels", tuple(int(v) for v in self.labels))
        if len(self.points) != len(self.labels):
            raise ModelError(f"prompt has {len(self.points)} points but {len(self.labels)} labels")
        if any(v not in (0, 1) for v in self.labels):
            raise ModelError(f"point labels must be 0 (background) or 1 (foreground), got {self.labels}")
        if self.box is not None:
            x1, y1, x2, y2 = (float(v) for v in self.box)
            if not (x2 >= x1 and y2 >= y1):
                raise ModelError(f"box must be XYXY with x2 >= x1 and y2 >= y1, got {self.box}")
            object.__setattr__(self, "box", (x1, y1, x2, y2))
        if self.box is None and not any(self.labels):
            raise ModelError("a prompt needs a box or at least one foreground point")


@dataclass(frozen=True, eq=False)
class Mask:
    """A mask in the engine's input image frame, with its own predicted quality.

    ``logits`` holds the low-resolution (256x256) logits where the engine has them.
    ``prompt_index`` is the index of the prompt it answers (``-1`` for automask).
    """

    mask: np.ndarray
    score: float
    prompt_index: int = -1
    logits: np.ndarray | None = None
    stability: float | None = None

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def select_masks(masks: Sequence[Mask], output: OutputType) -> list[Mask]:
    """Keep the masks of one prompt that ``output`` asks for.

    Best quality keeps the *highest* score (the QuPath extension keeps the lowest by mistake).
    """
    output = OutputType.parse(output)
    if not masks or output in (OutputType.SINGLE, OutputType.MULTI_ALL):
        return list(masks)
    if output is OutputType.MULTI_LARGEST:
        return [max(masks, key=lambda m: m.area)]
    if output is OutputType.MULTI_SMALLEST:
        return [min(masks, key=lambda m: m.area)]
    return [max(masks, key=lambda m: m.score)]


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


@dataclass(frozen=True)
class AutomaskParams:
    """Every parameter of SAM's automatic mask generator, with samapi's server defaults."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    output: OutputType = OutputType.MULTI_BEST
    include_image_edge: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", OutputType.parse(self.output))
        for name in ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor"):
            if int(getattr(self, name)) < 1:
                raise ModelError(f"automask parameter {name} must be >= 1, got {getattr(self, name)}")
        if int(self.crop_n_layers) < 0 or int(self.min_mask_region_area) < 0:
            raise ModelError("automask parameters crop_n_layers and min_mask_region_area must be >= 0")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ModelError(f"automask parameter {name} must be in [0, 1], got {value}")


@runtime_checkable
class NamedModel(Protocol):
    """Anything that says which model type it runs (every engine, and the stand-ins tests give jobs)."""

    model_type: str


@runtime_checkable
class Engine(NamedModel, Protocol):
    """What jobs and the server need from a model, local or remote."""

    def set_image(self, image: np.ndarray) -> None:
        """Encode an image (H, W, 3) uint8 RGB; other inputs go through :func:`to_rgb8`."""

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
class BatchEncoder(Protocol):
    """Batched encoding: several images per encoder call, into the embedding cache that ``set_image`` reads."""

    encode_batch_size: int
    cache: EmbeddingCache | None

    def encode_batch(self, images: Sequence[np.ndarray]) -> int:
        """Encode the images the cache lacks; returns how many were encoded."""


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Convert an image to (H, W, 3) uint8 RGB, the only input SAM takes.

    Rule: 2-D (grayscale) is repeated over three channels; (H, W, 1) likewise; (H, W, 4) drops
    alpha; (H, W, 2) gets a zero blue channel. uint8 is kept; other dtypes are scaled linearly
    from their 0.1-99.9 percentile range to 0..255 (bool maps to 0/255). Multichannel
    fluorescence should be rendered to RGB first (``qpsam.project`` does this with channel colours).
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ModelError(f"image must be 2-D or (H, W, C), got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 2:
        arr = np.concatenate([arr, np.zeros_like(arr[:, :, :1])], axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] != 3:
        raise ModelError(f"image with {arr.shape[2]} channels: render it to RGB first")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    data = arr.astype(np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(arr.shape, np.uint8)
    lo, hi = np.percentile(finite, [0.1, 99.9])
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.clip((np.nan_to_num(data, nan=lo) - lo) / (hi - lo), 0, 1)
    return (scaled * 255 + 0.5).astype(np.uint8)
