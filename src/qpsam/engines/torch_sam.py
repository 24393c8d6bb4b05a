"""Local SAM1-family engine: ``vit_h``, ``vit_l``, ``vit_b`` (segment-anything) and ``vit_t`` (MobileSAM).

The image encoder's output goes through the :class:`~qpsam.engines.cache.EmbeddingCache`, so prompts on an image
seen before only run the prompt decoder. Prompts of the same shape (box or not, number of points) are decoded
together in batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError
from ..sam import Mask, OutputType, Prompt, check_model_type, to_rgb8
from ..types import Progress
from ._torch import autocast, autocast_dtype, collect_torch_masks, load_into, pick_device, read_checkpoint
from .cache import CacheKey, Embedding, EmbeddingCache
from .cached import CachedEngine
from .quiet import quiet_imports
from .weights import resolve_weights, weights_sha256

__all__ = ["TorchSamEngine", "build_sam1"]


# Bytes of float32 mask upsampling one decoder batch may use; bounds memory for large batches and images.
_UPSAMPLE_BUDGET = 1 << 30


def _default_encode_batch(device: Any) -> int:
    """Images per encoder call in :meth:`TorchSamEngine.encode_batch`: batches pay off where the encoder does
    not already fill the device (a GPU); on a CPU one image keeps every core busy."""
    return {"cuda": 4}.get(device.type, 1)


def _default_batch(device: Any) -> int:
    """Prompts decoded per call. On a CPU the decoder's per-prompt cost grows past a batch of 2-4 (memory
    traffic of the repeated image embedding), so small chunks are fastest there; GPUs like large batches."""
    return {"cuda": 64, "mps": 16}.get(device.type, 2)


def build_sam1(model_type: str) -> tuple[Any, type]:
    """The model architecture (no weights loaded) and the predictor class for a SAM1-family type."""
    info = check_model_type(model_type)
    if info.family == "mobile_sam":
        try:
            with quiet_imports():
                from mobile_sam import SamPredictor, sam_model_registry
        except ImportError as exc:
            raise ModelError("vit_t needs the mobile_sam package: pip install mobilesam-mirror timm") from exc
    elif info.family == "sam1":
        try:
            with quiet_imports():
                from segment_anything import SamPredictor, sam_model_registry
        except ImportError as exc:
            raise ModelError(f"{model_type} needs the segment_anything package: pip install segment-anything") from exc
    else:
        raise ModelError(f"model type {model_type} is not a SAM1-family model (vit_h, vit_l, vit_b, vit_t)")
    return sam_model_registry[model_type](), SamPredictor


class TorchSamEngine(CachedEngine):
    """SAM1/MobileSAM on PyTorch, plus :meth:`encode_batch` (several images per encoder call)."""

    def __init__(
        self,
        model_type: str,
        weights: str | Path | None = None,
        device: str = "auto",
        cache: EmbeddingCache | None | bool = None,
        progress: Progress | None = None,
        precision: str = "auto",
        max_batch: int | None = None,
    ) -> None:
        info = check_model_type(model_type)
        if not info.sam1:
            raise ModelError(f"model type {model_type} is not a SAM1-family model (vit_h, vit_l, vit_b, vit_t)")
        self.model_type = info.type
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.weights_path = resolve_weights(info.type, weights, progress=progress)
        state = read_checkpoint(self.weights_path, info.type)  # fail on bad files before building the model
        self.weights_sha256 = weights_sha256(self.weights_path)
        model, predictor_cls = build_sam1(info.type)
        load_into(model, state, self.weights_path, info.type)
        del state
        model.to(self.device).eval()
        self.predictor = predictor_cls(model)
        self.mask_threshold = float(model.mask_threshold)
        super().__init__(cache)
        self.max_batch = max(1, int(max_batch)) if max_batch else _default_batch(self.device)
        self.encode_batch_size = _default_encode_batch(self.device)

    def __repr__(self) -> str:
        return f"TorchSamEngine({self.model_type!r}, weights={str(self.weights_path)!r}, device={self.device})"

    # ----------------------------------------------------------------------------------------------- image

    def _encode(self, rgb: np.ndarray) -> Embedding:
        p = self.predictor
        with autocast(self.device, self.dtype):
            p.set_image(rgb, image_format="RGB")
        return Embedding(
            {"features": p.features.detach()},
            {"original_size": tuple(p.original_size), "input_size": tuple(p.input_size)},
        )

    def _restore(self, embedding: Embedding, rgb: np.ndarray) -> None:
        p = self.predictor
        p.reset_image()
        p.features = embedding.tensors["features"].to(self.device)
        p.original_size = tuple(embedding.meta["original_size"])
        p.input_size = tuple(embedding.meta["input_size"])
        p.is_image_set = True

    def _image_ready(self) -> bool:
        return bool(self.predictor.is_image_set)

    def encode_batch(self, images: Sequence[np.ndarray]) -> int:
        """Encode ``images`` into the embedding cache, :attr:`encode_batch_size` per encoder call, so that a later
        :meth:`set_image` of any of them is a cache hit; images already cached are skipped. Returns how many were
        encoded. The current image is left as it was."""
        import torch

        if self.cache is None:
            raise ModelError("encode_batch fills the embedding cache, and this engine has none (cache=False)")
        todo: dict[CacheKey, np.ndarray] = {}
        for image in images:
            rgb = to_rgb8(image)
            key = self._cache_key(rgb)
            if key not in todo and self.cache.get(key) is None:
                todo[key] = rgb
        p = self.predictor
        model = p.model
        items = list(todo.items())
        size = max(1, int(self.encode_batch_size))
        with self.lock:
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                batch, sizes = [], []
                for _, rgb in chunk:  # SamPredictor.set_image's steps, one image at a time up to the encoder
                    resized = torch.as_tensor(p.transform.apply_image(rgb), device=self.device)
                    resized = resized.permute(2, 0, 1).contiguous()[None]
                    batch.append(model.preprocess(resized))
                    sizes.append(((int(rgb.shape[0]), int(rgb.shape[1])), tuple(int(v) for v in resized.shape[-2:])))
                with torch.no_grad(), autocast(self.device, self.dtype):
                    features = model.image_encoder(torch.cat(batch))
                self.encoder_runs += len(chunk)
                for (key, _), one, (original, input_size) in zip(chunk, features, sizes):
                    self.cache.put(key, Embedding({"features": one[None].detach()},
                                                  {"original_size": original, "input_size": input_size}))
        return len(items)

    # -------------------------------------------------------------------------------------------- prompts

    def _batch_size(self, output: OutputType, height: int, width: int) -> int:
        """At most :attr:`max_batch`, and few enough that the full-size masks fit the upsampling budget."""
        k = 3 if output.multimask else 1
        per_mask = 4 * (1024 * 1024 + height * width)
        return max(1, min(self.max_batch, _UPSAMPLE_BUDGET // (k * per_mask)))

    def _decode(
        self, prompts: Sequence[Prompt], indices: list[int], output: OutputType, results: list[list[Mask]]
    ) -> None:
        import torch

        p = self.predictor
        first = prompts[indices[0]]
        coords = labels = boxes = None
        if first.points:
            pts = np.array([prompts[i].points for i in indices], dtype=np.float64)
            coords = torch.as_tensor(
                p.transform.apply_coords(pts, p.original_size), dtype=torch.float, device=self.device
            )
            labels = torch.as_tensor(
                np.array([prompts[i].labels for i in indices]), dtype=torch.int, device=self.device
            )
        if first.box is not None:
            bx = np.array([prompts[i].box for i in indices], dtype=np.float64)
            boxes = torch.as_tensor(
                p.transform.apply_boxes(bx, p.original_size), dtype=torch.float, device=self.device
            )
        with autocast(self.device, self.dtype):
            masks, scores, low = p.predict_torch(
                coords, labels, boxes, None, multimask_output=output.multimask, return_logits=False
            )
        collect_torch_masks(results, indices, masks, scores, low, output)

    # ------------------------------------------------------------------------------------------- automask

    def decode_points(self, points: np.ndarray, multimask: bool) -> tuple[Any, Any]:
        """Decoder logits (N, K, H, W) and predicted IoU (N, K) for single foreground points (automask)."""
        import torch

        p = self.predictor
        coords = torch.as_tensor(
            p.transform.apply_coords(np.asarray(points, dtype=np.float64), p.original_size),
            dtype=torch.float,
            device=self.device,
        )
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=self.device)
        logits, ious = [], []
        for start in range(0, coords.shape[0], self.max_batch):
            with autocast(self.device, self.dtype):
                part, iou, _ = p.predict_torch(
                    coords[start : start + self.max_batch, None, :],
                    labels[start : start + self.max_batch],
                    multimask_output=multimask,
                    return_logits=True,
                )
            logits.append(part.float())
            ious.append(iou.float())
        return torch.cat(logits), torch.cat(ious)
