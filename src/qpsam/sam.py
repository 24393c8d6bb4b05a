"""SAM's vocabulary: prompts, masks, output types, automask parameters and the one registry of model types.

Light on purpose (numpy only): prompts, Groovy scripts, the samapi client and the server's schemas speak this
language without importing an engine. Engines implement :class:`qpsam.engines.base.Engine` in these terms.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from .errors import ModelError

__all__ = [
    "MODELS",
    "MODEL_TYPES",
    "SAM1_TYPES",
    "SAM2_TYPES",
    "VIDEO_TYPES",
    "DEFAULT_MODEL",
    "DEFAULT_TRACK_MODEL",
    "Family",
    "ModelInfo",
    "check_model_type",
    "OutputType",
    "Prompt",
    "Mask",
    "AutomaskParams",
    "select_masks",
    "to_rgb8",
]

# ------------------------------------------------------------------------------------------------ model registry

#: ``mobile_sam`` is SAM1's architecture with a TinyViT encoder: it shares SAM1's decoder, prompts and ONNX export
#: but is built by another package, so the engines need to tell the two apart.
Family = Literal["sam1", "mobile_sam", "sam2", "sam3"]


@dataclass(frozen=True)
class ModelInfo:
    """A model type: its family, label, default weights and what it can do beyond prompts on one image.

    ``weights`` is the key of its official checkpoint in :data:`qpsam.engines.weights.data.CHECKPOINTS`;
    ``video``: masks propagate through planes (z or t); ``text``: concept prompts (a phrase, exemplar boxes);
    ``onnx``: the ONNX Runtime engine runs it.
    """

    type: str
    family: Family
    label: str
    weights: str
    video: bool = False
    text: bool = False
    onnx: bool = False

    @property
    def sam1(self) -> bool:
        """SAM1's architecture (segment-anything or MobileSAM)."""
        return self.family in ("sam1", "mobile_sam")


MODELS: dict[str, ModelInfo] = {
    m.type: m
    for m in (
        ModelInfo("vit_h", "sam1", "vit_h (huge)", "sam_vit_h", onnx=True),
        ModelInfo("vit_l", "sam1", "vit_l (large)", "sam_vit_l", onnx=True),
        ModelInfo("vit_b", "sam1", "vit_b (base)", "sam_vit_b", onnx=True),
        ModelInfo("vit_t", "mobile_sam", "vit_t (mobile)", "mobile_sam", onnx=True),
        ModelInfo("sam2_l", "sam2", "sam2_l (large)", "sam2_hiera_large", video=True),
        ModelInfo("sam2_bp", "sam2", "sam2_bp (base plus)", "sam2_hiera_base_plus", video=True),
        ModelInfo("sam2_s", "sam2", "sam2_s (small)", "sam2_hiera_small", video=True),
        ModelInfo("sam2_t", "sam2", "sam2_t (tiny)", "sam2_hiera_tiny", video=True),
        ModelInfo("sam3", "sam3", "sam3", "sam3", video=True, text=True),
    )
}

MODEL_TYPES: tuple[str, ...] = tuple(MODELS)
SAM1_TYPES: tuple[str, ...] = tuple(t for t, m in MODELS.items() if m.sam1)
SAM2_TYPES: tuple[str, ...] = tuple(t for t, m in MODELS.items() if m.family == "sam2")
VIDEO_TYPES: tuple[str, ...] = tuple(t for t, m in MODELS.items() if m.video)

#: The model a job uses when none is given: the smallest, which runs anywhere.
DEFAULT_MODEL = "vit_t"
#: The model a tracking run uses when none is given: the smallest SAM2.
DEFAULT_TRACK_MODEL = "sam2_t"


def check_model_type(model_type: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``model_type``, or a :class:`ModelError` listing the known types."""
    info = MODELS.get(str(model_type))
    if info is None:
        raise ModelError(f"unknown model type {model_type!r}; choose one of {', '.join(MODELS)}")
    return info


# ---------------------------------------------------------------------------------------------------- prompts


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
