"""SAM3 engine: concept segmentation from a text phrase and exemplar boxes (needs the ``sam3`` package and
its weights, neither of which qpsam can ship; a clear :class:`ModelError` says what is missing).

SAM3 finds *every* instance of a concept. :meth:`Sam3Engine.segment` is its native call; :meth:`predict`
answers SAM1-style box prompts with the found instance that best covers each box.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError
from ..sam import AutomaskParams, Mask, OutputType, Prompt, check_model_type, to_rgb8
from ..types import Progress
from ._torch import autocast, autocast_dtype, pick_device
from .cache import EmbeddingCache
from .weights import resolve_weights

__all__ = ["Sam3Engine", "sam3_available"]



def sam3_available() -> bool:
    """Whether the ``sam3`` package imports here."""
    try:
        import sam3  # noqa: F401
    except ImportError:
        return False
    return True


class Sam3Engine:
    """SAM3 image model through the ``sam3`` package's processor."""

    def __init__(
        self,
        model_type: str = "sam3",
        weights: str | Path | None = None,
        device: str = "auto",
        cache: EmbeddingCache | None | bool = None,
        progress: Progress | None = None,
        precision: str = "auto",
        confidence_threshold: float = 0.5,
    ) -> None:
        info = check_model_type(model_type)
        if info.family != "sam3":
            raise ModelError(f"model type {model_type} is not SAM3")
        try:
            from sam3.model.sam3_image_processor import Sam3Processor
            from sam3.model_builder import build_sam3_image_model
        except ImportError as exc:
            raise ModelError(
                "SAM3 needs the sam3 package (pip install sam3) and its checkpoint sam3.pt "
                "(gated on the Hugging Face hub; register a downloaded copy with "
                "`qpsam weights register --type sam3 --name default FILE`)"
            ) from exc
        self.model_type = info.type
        self.weights_path = resolve_weights(info.type, weights, progress=progress)
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        try:
            model = build_sam3_image_model(
                checkpoint_path=str(self.weights_path), load_from_HF=False, device=str(self.device)
            )
        except (RuntimeError, KeyError, OSError) as exc:
            raise ModelError(f"cannot load SAM3 weights {self.weights_path}: {exc}") from exc
        self.processor = Sam3Processor(model, device=str(self.device), confidence_threshold=confidence_threshold)
        self.lock = threading.RLock()
        self._state: dict[str, Any] | None = None
        self._image_shape: tuple[int, int] | None = None
        del cache  # SAM3's state mixes image features with prompts; it is kept per image instead

    def set_image(self, image: np.ndarray) -> None:
        from PIL import Image

        rgb = to_rgb8(image)
        with self.lock, autocast(self.device, self.dtype):
            self._state = self.processor.set_image(Image.fromarray(rgb))
            self._image_shape = (int(rgb.shape[0]), int(rgb.shape[1]))

    def segment(
        self,
        text: str | None = None,
        positive_boxes: Sequence[tuple[float, float, float, float]] = (),
        negative_boxes: Sequence[tuple[float, float, float, float]] = (),
    ) -> list[Mask]:
        """Every instance of the concept named by ``text`` and/or shown by XYXY exemplar boxes."""
        with self.lock:
            if self._state is None or self._image_shape is None:
                raise ModelError("sam3: no image set; call set_image(image) first")
            if not text and not positive_boxes and not negative_boxes:
                raise ModelError("sam3: give a text phrase or at least one exemplar box")
            h, w = self._image_shape
            state = self._state
            with autocast(self.device, self.dtype):
                self.processor.reset_all_prompts(state)
                state = self.processor.set_text_prompt(prompt=text or "visual", state=state)
                for boxes, label in ((positive_boxes, True), (negative_boxes, False)):
                    for x1, y1, x2, y2 in boxes:
                        norm = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
                        state = self.processor.add_geometric_prompt(box=norm, label=label, state=state)
            self._state = state
            masks = state["masks"].squeeze(1).cpu().numpy().astype(bool)
            scores = state["scores"].float().cpu().numpy()
            return [Mask(masks[i], float(scores[i]), -1) for i in range(len(scores))]

    def predict(
        self, prompts: Sequence[Prompt], output: OutputType | str = OutputType.SINGLE
    ) -> list[list[Mask]]:
        """For each box prompt, the instance found from that box that covers it best."""
        results: list[list[Mask]] = []
        for i, prompt in enumerate(prompts):
            if prompt.box is None:
                raise ModelError(f"sam3 takes boxes (and text), not points: prompt {i} has no box")
            found = self.segment(positive_boxes=[prompt.box])
            if not found:
                results.append([])
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in prompt.box)
            best = max(found, key=lambda m: int(m.mask[y1:y2, x1:x2].sum()) - 0.5 * m.area)
            results.append([Mask(best.mask, best.score, i)])
        return results

    def automask(
        self, image: np.ndarray, params: AutomaskParams = AutomaskParams(), progress: Progress | None = None
    ) -> list[Mask]:
        raise ModelError("sam3 has no point-grid automask; use segment(text=...) to find every instance")
