"""Models: the engine interface and its implementations (heavy imports stay inside each module)."""

from .base import (
    MODEL_TYPES,
    SAM1_TYPES,
    SAM2_TYPES,
    AutomaskParams,
    Engine,
    Mask,
    OutputType,
    Prompt,
    select_masks,
    to_rgb8,
)

__all__ = [
    "MODEL_TYPES",
    "SAM1_TYPES",
    "SAM2_TYPES",
    "AutomaskParams",
    "Engine",
    "Mask",
    "OutputType",
    "Prompt",
    "select_masks",
    "to_rgb8",
]
