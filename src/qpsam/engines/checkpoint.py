"""Which model type a checkpoint is for, told from its state dict's key names alone (no model is built).

``qpsam weights register`` uses this to refuse a file of another model type at once, instead of at first use.
The state dict is memory-mapped where the file allows it, so even the 2.5 GB ViT-H checkpoint is not read whole.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from ..errors import WeightsError

__all__ = ["checkpoint_type", "check_checkpoint"]

# Number of transformer blocks of each image encoder, which is what sets the types of one family apart.
_SAM1_BLOCKS = {12: "vit_b", 24: "vit_l", 32: "vit_h"}
_SAM2_BLOCKS = {12: "sam2_t", 16: "sam2_s", 24: "sam2_bp", 48: "sam2_l"}


def _count_blocks(keys: Iterable[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return len(found)


def checkpoint_type(keys: Iterable[str]) -> str | None:
    """The model type whose state dict has these keys (``vit_b``, ``sam2_s``, ``sam3``...), or None."""
    keys = list(keys)
    if any(k.startswith("detector.") for k in keys):
        return "sam3"
    if any(k.startswith("image_encoder.trunk.") for k in keys):
        return _SAM2_BLOCKS.get(_count_blocks(keys, "image_encoder.trunk.blocks."), "sam2")
    if any(k.startswith("image_encoder.layers.") for k in keys):
        return "vit_t"  # MobileSAM's TinyViT encoder has stages ("layers"), not ViT blocks
    if any(k.startswith("image_encoder.blocks.") for k in keys):
        return _SAM1_BLOCKS.get(_count_blocks(keys, "image_encoder.blocks."), "sam1")
    return None


def check_checkpoint(path: str | Path, model_type: str) -> None:
    """Raise a :class:`WeightsError` unless ``path`` is a readable checkpoint of ``model_type``.

    Without torch nothing can be read and nothing is checked (the file is checked when it is loaded).
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return
    from ._torch import read_checkpoint

    state = read_checkpoint(path, model_type, mmap=True)
    found = checkpoint_type(state)
    if found is None:
        raise WeightsError(f"weights file {path} is not a SAM checkpoint: none of its {len(state)} tensors "
                           f"belongs to a SAM image encoder (e.g. {', '.join(list(state)[:2])})")
    if found != model_type:
        what = {"sam1": "a SAM ViT of unknown size", "sam2": "a SAM2 model of unknown size"}.get(found, found)
        raise WeightsError(f"weights file {path} is for {what}, not {model_type}")
