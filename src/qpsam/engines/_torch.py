"""Torch helpers shared by the local engines: device choice, autocast, and checkpoint loading with clear errors."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelError, WeightsError

__all__ = ["pick_device", "autocast_dtype", "autocast", "read_checkpoint", "load_into", "collect_torch_masks"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is installed wherever engines run
        raise ModelError("local models need PyTorch: pip install 'qpsam[sam]'") from exc
    return torch


def pick_device(device: str = "auto") -> Any:
    """``auto`` picks cuda, then mps, then cpu; anything else is passed to ``torch.device`` and checked."""
    torch = _torch()
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError(f"device {device!r} asked for, but MPS is not available here")
    return dev


def autocast_dtype(device: Any, precision: str = "auto") -> Any:
    """The autocast dtype for ``device``: bf16 (or fp16 where bf16 is missing) on CUDA, none elsewhere."""
    torch = _torch()
    precision = (precision or "auto").lower()
    if precision in ("fp32", "float32"):
        return None
    if precision in ("bf16", "bfloat16"):
        return torch.bfloat16
    if precision in ("fp16", "float16"):
        return torch.float16
    if precision != "auto":
        raise ModelError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@contextlib.contextmanager
def autocast(device: Any, dtype: Any) -> Iterator[None]:
    """Inference mode plus autocast to ``dtype`` on ``device`` (no autocast when ``dtype`` is None)."""
    torch = _torch()
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield


def read_checkpoint(path: str | Path, model_type: str, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint's state dict (``weights_only``), unwrapping ``{"model": ...}``-style containers.

    ``mmap``: map the tensors instead of reading them (zip-format files; older files are read whole).
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} for {model_type} does not exist")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} for {model_type} is empty")
    try:
        data = _load(torch, path, mmap)
    except Exception as exc:  # noqa: BLE001 - unpickling arbitrary bytes fails in many ways (IndexError, KeyError...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"cannot read weights file {path} for {model_type}: corrupt, truncated or not a PyTorch "
            f"checkpoint ({reason[:200]})"
        ) from exc
    for key in ("model", "model_state", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not data or not all(hasattr(v, "shape") for v in data.values()):
        raise WeightsError(f"weights file {path} for {model_type} holds no model state dict")
    for prefix in ("module.", "sam."):
        if all(k.startswith(prefix) for k in data):
            data = {k[len(prefix):]: v for k, v in data.items()}
    return data


def _load(torch: Any, path: Path, mmap: bool) -> Any:
    if mmap:
        import zipfile

        if zipfile.is_zipfile(path):  # torch maps only its zip format; legacy files are read whole
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_into(model: Any, state: dict[str, Any], path: str | Path, model_type: str) -> None:
    """Load ``state`` into ``model`` strictly, turning key or shape mismatches into a :class:`WeightsError`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if reshaped:
        parts.append(f"{len(reshaped)} tensors of another shape (e.g. {'; '.join(reshaped[:2])})")
    if parts:
        raise WeightsError(
            f"weights file {path} does not fit model type {model_type}: {'; '.join(parts)}; "
            "is it for another model type?"
        )
    model.load_state_dict(state, strict=True)


def collect_torch_masks(results: list[Any], indices: Any, masks: Any, scores: Any, low: Any, output: Any) -> None:
    """:func:`.base.collect_masks` for a decoder batch given as torch tensors (any device or float dtype)."""
    from .base import collect_masks

    collect_masks(
        results,
        indices,
        masks.cpu().numpy().astype(bool, copy=False),
        scores.float().cpu().numpy(),
        low.float().cpu().numpy(),
        output,
    )
