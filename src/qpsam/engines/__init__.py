"""Models: the engine interface and its implementations (heavy imports stay inside each module).

``load_engine(model_type, ...)`` is the one way jobs, the server and tests get a model.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from ..sam import MODELS, check_model_type
from ..types import Progress
from .base import Engine
from .cache import EmbeddingCache

__all__ = ["Engine", "EmbeddingCache", "load_engine"]

ENGINE_KINDS = ("auto", "torch", "onnx")
ONNX_TYPES = tuple(t for t, m in MODELS.items() if m.onnx)


def load_engine(
    model_type: str,
    weights: str | Path | None = None,
    device: str = "auto",
    cache: EmbeddingCache | None | bool = None,
    progress: Progress | None = None,
    engine: str = "auto",
    **options: object,
) -> Engine:
    """A ready engine for ``model_type`` (a key of :data:`qpsam.sam.MODELS`).

    ``weights``: a file, URL, registered or catalog name (see :func:`qpsam.engines.weights.resolve_weights`);
    ``device``: auto (cuda, mps, cpu) or a torch device; ``cache``: an :class:`EmbeddingCache` to share, None
    for the process-wide one, False for none; ``progress(done, total)`` reports weight downloads;
    ``engine``: torch, onnx (SAM1 family only) or auto: onnx for SAM1-family models when the device is the CPU and
    onnxruntime is installed, else torch. Extra ``options`` go to the engine (``precision``; onnx: ``threads``).
    """
    info = check_model_type(model_type)
    kind = (engine or "auto").lower()
    if kind not in ENGINE_KINDS:
        raise ModelError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_KINDS)}")
    sam1 = info.sam1
    if kind == "onnx" and not info.onnx:
        raise ModelError(
            f"the onnx engine runs SAM1-family models ({', '.join(ONNX_TYPES)}), not {info.type}; "
            "use engine='torch' (or 'auto')"
        )
    precision = str(options.get("precision") or "auto").lower()
    if kind == "auto" and info.onnx and precision in ("auto", "fp32", "float32") and _cpu_only(device) and _has_onnxruntime():
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
