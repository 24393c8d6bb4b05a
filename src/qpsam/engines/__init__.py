"""Models: the engine interface and its implementations (heavy imports stay inside each module).

``load_engine(model_type, ...)`` is the one way jobs, the server and tests get a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ModelError
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
from .cache import EmbeddingCache

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "MODEL_TYPES",
    "SAM1_TYPES",
    "SAM2_TYPES",
    "AutomaskParams",
    "Engine",
    "EmbeddingCache",
    "Mask",
    "OutputType",
    "Prompt",
    "load_engine",
    "select_masks",
    "to_rgb8",
]

ENGINE_KINDS = ("auto", "torch", "onnx")


def load_engine(
    model_type: str,
    weights: str | Path | None = None,
    device: str = "auto",
    cache: EmbeddingCache | None | bool = None,
    progress: Callable[[int, int], None] | None = None,
    engine: str = "auto",
    **options: object,
) -> Engine:
    """A ready engine for ``model_type`` (``vit_h|vit_l|vit_b|vit_t|sam2_*|sam3``).

    ``weights``: a file, URL, registered or catalog name (see :func:`qpsam.weights.resolve_weights`);
    ``device``: auto (cuda, mps, cpu) or a torch device; ``cache``: an :class:`EmbeddingCache` to share, None
    for the process-wide one, False for none; ``progress(done, total)`` reports weight downloads;
    ``engine``: torch, onnx (SAM1 family only) or auto: onnx for SAM1-family models when the device is the CPU and
    onnxruntime is installed, else torch. Extra ``options`` go to the engine (``precision``; onnx: ``threads``).
    """
    from ..weights import check_model_type

    info = check_model_type(model_type)
    kind = (engine or "auto").lower()
    if kind not in ENGINE_KINDS:
        raise ModelError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_KINDS)}")
    sam1 = info.family in ("sam1", "mobile_sam")
    if kind == "onnx" and not sam1:
        raise ModelError(
            f"the onnx engine runs SAM1-family models (vit_h, vit_l, vit_b, vit_t), not {info.type}; "
            "use engine='torch' (or 'auto')"
        )
    precision = str(options.get("precision") or "auto").lower()
    if kind == "auto" and sam1 and precision in ("auto", "fp32", "float32") and _cpu_only(device) and _has_onnxruntime():
        kind = "onnx"
    if kind == "onnx":
        from .onnx_sam import OnnxSamEngine

        return OnnxSamEngine(info.type, weights, device=device, cache=cache, progress=progress, **options)  # type: ignore[arg-type]
    if sam1:
        from .torch_sam import TorchSamEngine

        return TorchSamEngine(info.type, weights, device=device, cache=cache, progress=progress, **options)  # type: ignore[arg-type]
    if info.family == "sam2":
        from .sam2 import Sam2Engine

        return Sam2Engine(info.type, weights, device=device, cache=cache, progress=progress, **options)  # type: ignore[arg-type]
    from .sam3 import Sam3Engine

    return Sam3Engine(info.type, weights, device=device, cache=cache, progress=progress, **options)  # type: ignore[arg-type]


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _cpu_only(device: str) -> bool:
    """Whether ``device`` resolves to the CPU (auto: no CUDA or MPS here, or no torch at all)."""
    name = (device or "auto").lower()
    if name == "cpu":
        return True
    if name != "auto":
        return False
    try:
        from ._torch import pick_device

        return pick_device("auto").type == "cpu"
    except ModelError:  # no torch: only the onnx engine can run
        return True
