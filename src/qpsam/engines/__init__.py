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

__all__ = ["ENGINE_KINDS", "Engine", "EmbeddingCache", "auto_engine", "load_engine"]

ENGINE_KINDS = ("auto", "torch", "onnx", "openvino")
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
    ``engine``: torch, onnx or openvino (these two SAM1 family only, the CPU), or auto: for SAM1-family models on
    the CPU, openvino when OpenVINO is installed, else onnx when onnxruntime is, else torch (see
    :func:`auto_engine`). Extra ``options`` go to the engine (``precision``; onnx and openvino: ``threads``).
    """
    info = check_model_type(model_type)
    kind = (engine or "auto").lower()
    if kind not in ENGINE_KINDS:
        raise ModelError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_KINDS)}")
    sam1 = info.sam1
    if kind in ("onnx", "openvino") and not info.onnx:
        raise ModelError(
            f"the {kind} engine runs SAM1-family models ({', '.join(ONNX_TYPES)}), not {info.type}; "
            "use engine='torch' (or 'auto')"
        )
    if kind == "auto":
        kind = auto_engine(info.onnx and _cpu_only(device), str(options.get("precision") or "auto"))
    if kind == "openvino":
        from .openvino_sam import OpenVinoSamEngine

        return OpenVinoSamEngine(info.type, weights, device=device, cache=cache, progress=progress, **options)  # type: ignore[arg-type]
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


def auto_engine(cpu_sam1: bool, precision: str = "auto") -> str:
    """What ``engine='auto'`` runs: for a SAM1-family model on the CPU (``cpu_sam1``), the fastest engine that is
    installed and gives torch's masks (IoU >= 0.99 on the demo's boxes, see README "OpenVINO"): openvino, else
    onnx (fp32 only), else torch; torch for everything else."""
    if not cpu_sam1:
        return "torch"
    name = (precision or "auto").lower()
    from .openvino_sam import host_native_bf16, openvino_available

    if openvino_available() and (
        name in ("auto", "fp32", "float32") or (name in ("bf16", "bfloat16") and host_native_bf16())
    ):
        return "openvino"
    if name in ("auto", "fp32", "float32") and _has_onnxruntime():
        return "onnx"
    return "torch"


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
