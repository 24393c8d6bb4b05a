"""Bounds on automask requests, checked before any work starts.

SAM's generator runs the image encoder once per crop (``1 + 4 + ... + 4**crop_n_layers`` crops) and the mask
decoder once per point of each crop's grid, and holds ``points_per_batch`` full-size logit maps at a time.
Each parameter is bounded (the QuPath extension's own UI range where it has one), then the total work: crops
and mask decodings. A request over a limit answers 422 naming the parameter and the limit; a batch that would
not fit the memory budget is made smaller instead (results do not depend on the batch size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..errors import PromptError
from ..sam import AutomaskParams
from .echo import clip

__all__ = [
    "AutomaskWork",
    "automask_work",
    "check_automask",
    "batch_for_memory",
    "PARAMETER_BOUNDS",
    "MAX_COORDINATE",
    "MAX_INDEX",
    "MAX_PROMPT_POINTS",
    "MAX_BOXES",
    "MAX_VIDEO_OBJECTS",
]

# Prompts. Coordinates beyond 2**24 pixels are past float32's integer precision (SAM scales them in float32,
# and 1e308 became inf there: an empty answer instead of an error). Point and box counts bound the decoder's
# attention, which grows with the number of prompt tokens (100,000 points made ONNX Runtime fail).
MAX_COORDINATE = float(2**24)
MAX_INDEX = 2**31 - 1  # frames, planes and object ids: QuPath stores them as Java ints
MAX_PROMPT_POINTS = 1000
MAX_BOXES = 1000  # SAM3 exemplar boxes kept across requests
MAX_VIDEO_OBJECTS = 1000  # prompt objects in one video request

# (lowest, highest) per parameter. Integers follow the extension's spinners (points per side and per batch
# 1-10000, crop layers 0-10, downscale 0-100); floats their meaning (thresholds and ratios in 0-1).
PARAMETER_BOUNDS: dict[str, tuple[float, float]] = {
    "points_per_side": (1, 10000),
    "points_per_batch": (1, 10000),
    "crop_n_layers": (0, 10),
    "crop_n_points_downscale_factor": (0, 100),
    "pred_iou_thresh": (0.0, 1.0),
    "stability_score_thresh": (0.0, 1.0),
    "stability_score_offset": (0.0, 100.0),  # in logits; SAM's default is 1
    "box_nms_thresh": (0.0, 1.0),
    "crop_nms_thresh": (0.0, 1.0),
    "crop_overlap_ratio": (0.0, 1.0),
}

# Bytes held per point, per mask, per pixel of a crop while a batch is decoded: float32 logits, their copy,
# the thresholded masks and the stability score's intermediates.
BYTES_PER_LOGIT = 16


@dataclass(frozen=True)
class AutomaskWork:
    """What an automask request costs: encoder runs (crops) and mask decodings (points summed over crops)."""

    crops: int
    decodings: int


def automask_work(points_per_side: int, crop_n_layers: int, downscale: int) -> AutomaskWork:
    """The crops and decodings SAM's generator runs for these parameters (closed form: nothing is built)."""
    crops = decodings = 0
    for layer in range(crop_n_layers + 1):
        per_side = int(points_per_side / downscale**layer) if layer else points_per_side
        crops += 4**layer
        decodings += 4**layer * per_side * per_side
    return AutomaskWork(crops, decodings)


def check_automask(
    values: dict[str, Any], *, max_decodings: int, max_crops: int, max_region_area: int
) -> dict[str, Any]:
    """The generator's parameters (``AutomaskParams`` field names) if every value and the total work are within
    the limits, else :class:`PromptError` naming the parameter and the limit.

    A downscale factor of 0 (the extension allows it) becomes 1 when there are no crop layers, where it has no
    effect.
    """
    for name, (low, high) in PARAMETER_BOUNDS.items():
        value = values[name]
        if not low <= value <= high:
            raise PromptError(f"automask parameter {name} must be between {low} and {high} (this server's limit), "
                              f"got {clip(value)}")
    area = values["min_mask_region_area"]
    if not 0 <= area <= max_region_area:
        raise PromptError(f"automask parameter min_mask_region_area must be between 0 and {max_region_area} "
                          f"(this server's largest image), got {clip(area)}")
    points, layers, downscale = (int(values[k]) for k in ("points_per_side", "crop_n_layers",
                                                          "crop_n_points_downscale_factor"))
    if downscale == 0:
        if layers > 0:
            raise PromptError("automask parameter crop_n_points_downscale_factor must be at least 1 with crop layers")
        values = {**values, "crop_n_points_downscale_factor": 1}
        downscale = 1
    work = automask_work(points, layers, downscale)
    if work.crops > max_crops:
        most = max(0, int(math.log(3 * max_crops + 1, 4) + 1e-9) - 1)
        raise PromptError(
            f"automask with crop_n_layers {layers} runs the encoder on {work.crops} crops; this server's limit is "
            f"{max_crops} crops (crop_n_layers at most {most})"
        )
    if work.decodings > max_decodings:
        raise PromptError(
            f"automask with points_per_side {points}, crop_n_layers {layers} and crop_n_points_downscale_factor "
            f"{downscale} asks for {work.decodings} mask decodings; this server's limit is {max_decodings}"
        )
    return values


def batch_for_memory(params: AutomaskParams, height: int, width: int, budget_bytes: int) -> AutomaskParams:
    """``params`` with ``points_per_batch`` lowered so that one batch of full-size logits fits the budget."""
    masks_per_point = 3 if params.output.multimask else 1
    per_point = masks_per_point * height * width * BYTES_PER_LOGIT
    fits = max(1, budget_bytes // max(1, per_point))
    if params.points_per_batch <= fits:
        return params
    return replace(params, points_per_batch=int(fits))
