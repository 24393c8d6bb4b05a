"""SAM1-family engine on ONNX Runtime: the same interface and masks as :class:`TorchSamEngine`, faster on a CPU.

The encoder and decoder graphs are exported from the real checkpoint on first use (:mod:`.onnx_export`). All
prompts of one shape go through the decoder in a few calls, and masks are upsampled from the 256x256 logits only
inside the region where they can be positive (:mod:`.lowres`). Inference, automask included, needs numpy, Pillow,
OpenCV and onnxruntime only; PyTorch is needed once per weights file, for the export.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ModelError
from ..sam import AutomaskParams, Mask, OutputType, Prompt, check_model_type, select_masks
from ..types import Progress
from .amg import generate_masks_lowres
from .cache import Embedding, EmbeddingCache
from .cached import CachedEngine
from .lowres import PAD, Frame, masks_from_lowres, upsample_roi
from .onnx_export import PREPARED, OnnxFiles, ensure_onnx
from .weights import resolve_weights, weights_sha256

__all__ = [
    "OUTSIDE_LOGIT", "Graph", "OnnxSamEngine", "box_windows", "default_threads", "onnxruntime_available", "ort_session",
]


_PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
_PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# Prompts per decoder call. Each prompt carries its own copy of the 256x64x64 embedding through the decoder, so
# on a CPU the cost per prompt rises again past a few dozen (memory traffic); measured on the nuclei image.
_DEFAULT_BATCH = 32


def onnxruntime_available() -> bool:
    """Whether onnxruntime imports here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_threads() -> int:
    """Intra-op threads when none are given: torch's setting when torch is loaded, else the CPUs we may use."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError(
            "the onnx engine needs onnxruntime: pip install 'qpsam[cpu]' (or use --engine torch)"
        ) from exc
    return onnxruntime


class Graph(Protocol):
    """One loaded graph: ONNX Runtime's ``InferenceSession.run`` is the shape every runtime here offers."""

    def run(self, output_names: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def ort_session(path: Path, threads: int, providers: Sequence[str] = ("CPUExecutionProvider",)) -> Graph:
    """An ONNX Runtime session of the graph at ``path`` on ``threads`` intra-op threads, no spinning."""
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session: Graph = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    return session


class OnnxSamEngine(CachedEngine):
    """SAM1/MobileSAM on ONNX Runtime, with automask filtering at low resolution."""

    engine_name = "onnx"
    # the encoder's output differs from torch's in the last digits: its own cache entries
    cache_tag = "-onnx"

    def __init__(
        self,
        model_type: str,
        weights: str | Path | None = None,
        device: str = "cpu",
        cache: EmbeddingCache | None | bool = None,
        progress: Progress | None = None,
        threads: int | None = None,
        max_batch: int | None = None,
        precision: str = "auto",
    ) -> None:
        info = check_model_type(model_type)
        if not info.sam1:
            raise ModelError(
                f"the {self.engine_name} engine runs SAM1-family models (vit_h, vit_l, vit_b, vit_t), not "
                f"{model_type}; use engine='torch'"
            )
        self.model_type = info.type
        self.threads = max(1, int(threads)) if threads else default_threads()
        self._configure(device, precision)  # before the weights: a bad option fails fast
        self.weights_path = resolve_weights(info.type, weights, progress=progress)
        self.weights_sha256 = weights_sha256(self.weights_path)
        self.files: OnnxFiles = ensure_onnx(info.type, self.weights_path, self.weights_sha256, progress)
        try:
            self._encoder, self._prepare, self._decoder, self._upscale = self._sessions()
        except Exception:  # noqa: BLE001 - checked files that the runtime cannot load: export again, once
            self.files = ensure_onnx(info.type, self.weights_path, self.weights_sha256, progress, rebuild=True)
            self._encoder, self._prepare, self._decoder, self._upscale = self._sessions()
        super().__init__(cache)
        self.max_batch = max(1, int(max_batch)) if max_batch else _DEFAULT_BATCH
        self.mask_threshold = 0.0
        # box prompts: masks computed in a window of the box grown by this fraction of its size (at least this
        # many 16-pixel tokens of the 1024 frame) on each side; masks reaching the window's edge are redone whole
        self.window_margin = 1.0
        self.window_min_tokens = 3
        self.window_fallbacks = 0
        self._features: np.ndarray | None = None
        self._prepared: dict[str, np.ndarray] | None = None  # the decoder's shared image projections
        self._frame: Frame | None = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.model_type!r}, weights={str(self.weights_path)!r}, threads={self.threads}, "
                f"precision={self.precision!r})")

    # ------------------------------------------------------------------------------------------- runtime
    # The seam another runtime fills (see .openvino_sam): check the options, then load the four exported graphs
    # as objects with ONNX Runtime's ``run(None, feeds) -> [outputs]``.

    def _configure(self, device: str, precision: str) -> None:
        """Check ``device`` and ``precision`` for this runtime (a :class:`ModelError` naming the bad one)."""
        if (precision or "auto").lower() not in ("auto", "fp32", "float32"):
            raise ModelError(f"the onnx engine runs in fp32; precision {precision!r} needs engine='openvino' "
                             "(bf16 on a CPU with bf16 arithmetic) or engine='torch'")
        self.precision = "fp32"
        self.providers = _providers(_ort(), device)

    def _sessions(self) -> tuple[Graph, Graph, Graph, Graph]:
        files = self.files
        return (ort_session(files.encoder, self.threads, self.providers),
                ort_session(files.prepare, self.threads, self.providers),
                ort_session(files.decoder, self.threads, self.providers),
                ort_session(files.upscale, self.threads, self.providers))

    # ----------------------------------------------------------------------------------------------- image

    def _encode(self, rgb: np.ndarray) -> Embedding:
        frame = Frame.for_image(int(rgb.shape[0]), int(rgb.shape[1]))
        (features,) = self._encoder.run(None, {"image": preprocess(rgb, frame)})
        self._make_current(features, frame)
        return Embedding({"features": features}, {"original_size": frame.original})

    def _restore(self, embedding: Embedding, rgb: np.ndarray) -> None:
        features = embedding.tensors["features"]
        self._make_current(
            np.ascontiguousarray(features.numpy() if hasattr(features, "numpy") else features, dtype=np.float32),
            Frame.for_image(int(rgb.shape[0]), int(rgb.shape[1])),
        )

    def _make_current(self, features: np.ndarray, frame: Frame) -> None:
        self._features = features
        self._prepared = None
        self._frame = frame

    def _image_ready(self) -> bool:
        return self._features is not None and self._frame is not None

    def _current(self) -> tuple[np.ndarray, Frame]:
        """The current image's encoding and geometry (a :class:`ModelError` when there is none)."""
        self._require_image()
        assert self._features is not None and self._frame is not None
        return self._features, self._frame

    def decode(
        self,
        coords: np.ndarray,
        labels: np.ndarray,
        boxes: np.ndarray | None = None,
        channels: slice = slice(None),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Low-resolution logits (N, K, 256, 256) and predicted IoU (N, K) for prompts in image pixels
        (``coords`` (N, P, 2), ``labels`` (N, P) as SAM's prompt encoder takes them), in chunks; ``channels``
        picks the masks (0: single, 1-3: multimask).

        With ``boxes`` (N, 4, image pixels) the masks are computed only in a window around each box (see
        :func:`box_windows`) and left at a low constant outside it; a mask that reaches the window's edge is
        computed over the whole image instead, so the window never cuts a mask that grows past it."""
        features, frame = self._current()
        scale = np.array(
            [frame.resized[1] / frame.original[1], frame.resized[0] / frame.original[0]], dtype=np.float32
        )
        coords = np.asarray(coords, dtype=np.float32) * scale
        labels = np.asarray(labels, dtype=np.float32)
        if self._prepared is None:  # once per image, shared by every prompt and call
            self._prepared = dict(zip(PREPARED, self._prepare.run(None, {"embeddings": features})))
        lows, ious = [], []
        for start in range(0, coords.shape[0], self.max_batch):
            chunk = slice(start, start + self.max_batch)
            keys, hyper, iou = self._decoder.run(
                None,
                {"embeddings": features, **self._prepared, "point_coords": coords[chunk],
                 "point_labels": labels[chunk]},
            )
            hyper, iou = np.ascontiguousarray(hyper[:, channels]), iou[:, channels]
            if boxes is None:
                low = self._upscale_all(keys, hyper)
            else:
                low = self._upscale_windows(keys, hyper, np.asarray(boxes, np.float64)[chunk] * np.tile(scale, 2))
            lows.append(low)
            ious.append(iou)
        if len(lows) == 1:
            return lows[0], ious[0]
        return np.concatenate(lows), np.concatenate(ious)

    def _upscale_all(self, keys: np.ndarray, hyper: np.ndarray) -> np.ndarray:
        (logits,) = self._upscale.run(None, {"keys": keys, "hyper": hyper})
        return _to_grid(logits, _GRID, _GRID)

    def _upscale_windows(self, keys: np.ndarray, hyper: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Logits inside each prompt's window (one window size per call), the whole grid where a mask reaches
        the edge of its window."""
        n, k = hyper.shape[:2]
        row0, col0, height, width = box_windows(boxes, self.window_margin, self.window_min_tokens)
        index = (row0[:, None, None] + np.arange(height)[None, :, None]) * _GRID + (
            col0[:, None, None] + np.arange(width)[None, None, :]
        )
        picked = np.take_along_axis(keys, index.reshape(n, -1, 1).astype(np.intp, copy=False), axis=1)
        (logits,) = self._upscale.run(None, {"keys": picked, "hyper": hyper})
        window = _to_grid(logits, height, width)  # (N, K, 4h, 4w)
        low = np.full((n, k, _LOW, _LOW), OUTSIDE_LOGIT, dtype=np.float32)
        redo = []
        for i in range(n):
            r0, c0 = int(row0[i]), int(col0[i])
            low[i, :, 4 * r0 : 4 * (r0 + height), 4 * c0 : 4 * (c0 + width)] = window[i]
            if _reaches_edge(window[i], r0, r0 + height, c0, c0 + width, self.mask_threshold):
                redo.append(i)
        if redo:
            self.window_fallbacks += len(redo)
            low[redo] = self._upscale_all(np.ascontiguousarray(keys[redo]), hyper[redo])
        return low

    # -------------------------------------------------------------------------------------------- prompts

    def _decode(
        self, prompts: Sequence[Prompt], indices: list[int], output: OutputType, results: list[list[Mask]]
    ) -> None:
        _, frame = self._current()
        channels = slice(1, None) if output.multimask else slice(0, 1)
        has_box = prompts[indices[0]].box is not None
        coords, labels = _encode_prompts([prompts[i] for i in indices], has_box)
        boxes = np.array([prompts[i].box for i in indices], dtype=np.float64) if has_box else None
        low, iou = self.decode(coords, labels, boxes, channels)
        for row, index in enumerate(indices):
            results[index] = self._select(low[row], iou[row], index, frame, output)

    def _select(self, low: np.ndarray, iou: np.ndarray, index: int, frame: Frame, output: OutputType) -> list[Mask]:
        """Upsample the masks ``output`` keeps; best-quality picks by score before upsampling the others."""
        picks: Sequence[int] = range(len(iou))
        if output is OutputType.MULTI_BEST:
            picks = [int(np.argmax(iou))]
        masks = masks_from_lowres(low[list(picks)], frame, self.mask_threshold)
        candidates = [
            Mask(masks[j], float(iou[k]), index, np.array(low[k], dtype=np.float32)) for j, k in enumerate(picks)
        ]
        return select_masks(candidates, output)

    # ------------------------------------------------------------------------------------------- automask

    def decode_points_lowres(self, points: np.ndarray, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """Low-resolution logits (N, K, 256, 256) and predicted IoU (N, K) for single foreground points."""
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 1, 2)
        coords = np.concatenate([pts, np.zeros_like(pts)], axis=1)  # SAM pads lone points with a "not a point"
        labels = np.tile(np.array([[1.0, -1.0]], dtype=np.float32), (pts.shape[0], 1))
        return self.decode(coords, labels, channels=slice(1, None) if multimask else slice(0, 1))

    def decode_points(self, points: np.ndarray, multimask: bool) -> tuple[Any, Any]:
        """Full-size logits (N, K, H, W) and IoU (N, K) as torch tensors, for :func:`.amg.generate_masks`."""
        import torch

        _, frame = self._current()
        low, iou = self.decode_points_lowres(points, multimask)
        h, w = frame.original
        full = np.empty((*low.shape[:2], h, w), dtype=np.float32)
        for i in range(low.shape[0]):
            for j in range(low.shape[1]):
                full[i, j] = upsample_roi(low[i, j], frame, 0, h, 0, w)
        return torch.from_numpy(full), torch.from_numpy(np.ascontiguousarray(iou))

    def _generate(self, image: np.ndarray, params: AutomaskParams, progress: Progress | None) -> list[Mask]:
        """Automask filtering at low resolution, upsampling only the masks that are kept."""
        return generate_masks_lowres(self, image, params, progress)

    def frame(self) -> Frame:
        """The current image's geometry (for the low-resolution automask)."""
        return self._current()[1]


_GRID = PAD // 16  # image tokens per side
_LOW = 4 * _GRID  # low-resolution mask side
OUTSIDE_LOGIT = -32.0  # logits outside a box's window: far below any threshold, sane as a mask input


def box_windows(
    boxes: np.ndarray, margin: float = 1.0, minimum: int = 3
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Token windows ``row0, col0, height, width`` around XYXY ``boxes`` in the 1024 frame: each box grown by
    ``margin`` times its size (at least ``minimum`` tokens) on every side, all of one size (the largest, so that
    a batch is one array), shifted to stay inside the 64x64 grid."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / 16.0
    size = np.maximum(b[:, 2:] - b[:, :2], 0.0)
    grow = np.maximum(float(minimum), np.ceil(margin * size))
    lo = np.floor(b[:, :2] - grow).astype(np.int64)
    hi = np.ceil(b[:, 2:] + grow).astype(np.int64)
    lo = np.clip(lo, 0, _GRID - 1)
    hi = np.maximum(np.clip(hi, 0, _GRID), lo + 1)
    extent = np.minimum(np.max(hi - lo, axis=0), _GRID)  # (width, height)
    lo = np.clip(np.minimum(lo, _GRID - extent), 0, None)
    return lo[:, 1], lo[:, 0], int(extent[1]), int(extent[0])


def _to_grid(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, R, 2, 2, 2, 2, K) per-token logits of an ``height`` x ``width`` token window -> (N, K, 4h, 4w)."""
    n, k = logits.shape[0], logits.shape[-1]
    grid = logits.reshape(n, height, width, 2, 2, 2, 2, k).transpose(0, 7, 1, 3, 5, 2, 4, 6)
    return np.ascontiguousarray(grid.reshape(n, k, 4 * height, 4 * width))


def _reaches_edge(window: np.ndarray, r0: int, r1: int, c0: int, c1: int, threshold: float) -> bool:
    """Whether a mask in ``window`` (K, 4h, 4w) is above ``threshold`` on a window edge inside the image grid."""
    above = window > threshold
    return bool(
        (r0 > 0 and above[:, :4].any())
        or (r1 < _GRID and above[:, -4:].any())
        or (c0 > 0 and above[:, :, :4].any())
        or (c1 < _GRID and above[:, :, -4:].any())
    )


def preprocess(rgb: np.ndarray, frame: Frame) -> np.ndarray:
    """SAM's encoder input: longest side resized to 1024 (bilinear, as torchvision resizes a PIL image),
    normalised per channel and zero-padded to (1, 3, 1024, 1024)."""
    from PIL import Image

    h, w = frame.resized
    if (h, w) != frame.original:
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
    out = np.zeros((1, 3, PAD, PAD), dtype=np.float32)
    for c in range(3):  # per channel, in place: the same numbers as one broadcast expression, ~6x faster
        plane = out[0, c, :h, :w]
        np.subtract(rgb[..., c], _PIXEL_MEAN[c], out=plane, dtype=np.float32, casting="unsafe")
        np.divide(plane, _PIXEL_STD[c], out=plane)
    return out


def _encode_prompts(prompts: Sequence[Prompt], has_box: bool) -> tuple[np.ndarray, np.ndarray]:
    """Points then box corners (labels 2, 3), and SAM's padding point when there is no box."""
    n = len(prompts)
    n_points = len(prompts[0].points)
    extra = 2 if has_box else 1
    coords = np.zeros((n, n_points + extra, 2), dtype=np.float32)
    labels = np.full((n, n_points + extra), -1.0, dtype=np.float32)
    for row, prompt in enumerate(prompts):
        if n_points:
            coords[row, :n_points] = prompt.points
            labels[row, :n_points] = prompt.labels
        if has_box:
            assert prompt.box is not None
            x1, y1, x2, y2 = prompt.box
            coords[row, n_points:] = ((x1, y1), (x2, y2))
            labels[row, n_points:] = (2.0, 3.0)
    return coords, labels


def _providers(ort: Any, device: str) -> list[str]:
    """ONNX Runtime providers for ``device``: the CPU, or CUDA where onnxruntime-gpu offers it."""
    name = (device or "auto").lower()
    available = set(ort.get_available_providers())
    if name in ("auto", "cpu"):
        return ["CPUExecutionProvider"]
    if name.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ModelError(f"device {device!r} asked for with the onnx engine, but onnxruntime has no CUDA here")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ModelError(f"the onnx engine runs on cpu or cuda, not {device!r}")

