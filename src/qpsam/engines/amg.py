"""Automatic mask generation ("segment everything") shared by the SAM1/MobileSAM and SAM2 engines.

SAM's grid-of-points algorithm (crops, point batches, predicted-IoU and stability filters, NMS, small-region
clean-up) built on the engine's own encoder and decoder, so that the first crop layer reuses the embedding
cache. Parameters follow :class:`AutomaskParams` and samapi's mapping:

* ``output`` picks multimask per point and the score of the within-crop NMS: single mask (one mask per point,
  smaller masks win), all (three per point, no NMS), largest (larger win), smallest (smaller win), best quality
  (predicted IoU wins, standard SAM).
* ``include_image_edge=False`` also drops masks whose box touches all four image edges (within 20 px): the
  "whole image" masks.

The crop plan, point grids and region clean-up are numpy/OpenCV here, so the low-resolution generator (ONNX
engine) runs without PyTorch; the torch engines' generator also uses segment-anything's mask records.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import numpy as np

from ..sam import AutomaskParams, Mask, OutputType, to_rgb8

__all__ = [
    "IMAGE_EDGE_TOLERANCE",
    "LOWRES_DECODE_POINTS",
    "AutomaskBackend",
    "LowResBackend",
    "crop_boxes",
    "generate_masks",
    "generate_masks_lowres",
    "layer_point_grids",
    "point_grid",
    "remove_small_regions",
]

IMAGE_EDGE_TOLERANCE = 20.0
# Points per decoder call in the low-resolution generator. The decoder's working memory grows with the batch (about
# 30 MB a point in ONNX Runtime's arena for MobileSAM, which keeps its peak: 64 points took a 1024-pixel tile's run
# to 3 GB, 4 points to 1 GB) while its time per point does not; the masks do not depend on the batch.
LOWRES_DECODE_POINTS = 8


class AutomaskBackend(Protocol):
    """What an engine offers the generator: encode an image, decode a batch of single-point prompts."""

    mask_threshold: float

    def set_image(self, image: np.ndarray) -> None: ...

    def decode_points(self, points: np.ndarray, multimask: bool) -> tuple[Any, Any]:
        """Logits (N, K, H, W) at the current image's size and predicted IoU (N, K), as torch tensors."""


def _amg() -> Any:
    try:
        from segment_anything.utils import amg
    except ImportError:  # sam2 carries the same helpers
        from sam2.utils import amg
    return amg


def point_grid(per_side: int) -> np.ndarray:
    """``per_side`` x ``per_side`` points (x, y) in 0-1, at the centres of equal cells, row by row."""
    centres = (np.arange(per_side, dtype=np.float64) + 0.5) / per_side
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def layer_point_grids(per_side: int, layers: int, downscale: int) -> list[np.ndarray]:
    """The point grid of each crop layer: layer ``i`` has ``per_side / downscale**i`` points per side."""
    return [point_grid(int(per_side / downscale**i)) for i in range(layers + 1)]


def crop_boxes(height: int, width: int, layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """SAM's crops: the whole image (layer 0), then ``2**i`` x ``2**i`` overlapping crops for layer ``i``, as
    XYXY boxes with their layers."""
    boxes, layer_of = [[0, 0, width, height]], [0]
    short = min(height, width)
    for layer in range(1, layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        for x0 in (int((crop_w - overlap) * i) for i in range(per_side)):
            for y0 in (int((crop_h - overlap) * i) for i in range(per_side)):
                boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
                layer_of.append(layer)
    return boxes, layer_of


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``min_area`` pixels
    (8-connected), as SAM's post-processing does; an image of only small islands keeps its largest. Returns the
    mask and whether it changed."""
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}")
    holes = mode == "holes"
    working = (np.asarray(mask, dtype=bool) ^ holes).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = [i + 1 for i, size in enumerate(sizes) if size < min_area]
    if not small:
        return np.asarray(mask, dtype=bool), False
    if holes:
        fill = [0, *small]  # background and small holes become mask
    else:
        fill = [i for i in range(1, count) if i not in small] or [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True


def _crop_plan(height: int, width: int, params: AutomaskParams) -> tuple[list[Any], list[int], list[np.ndarray], int]:
    """SAM's crop boxes and their layers, each layer's point grid (0-1), and the decoder batches in all."""
    boxes, layer_idxs = crop_boxes(height, width, int(params.crop_n_layers), float(params.crop_overlap_ratio))
    grids = layer_point_grids(
        int(params.points_per_side), int(params.crop_n_layers), int(params.crop_n_points_downscale_factor)
    )
    per_batch = int(params.points_per_batch)
    total = sum(math.ceil(len(grids[layer]) / per_batch) for layer in layer_idxs)
    return boxes, layer_idxs, grids, total


def generate_masks(
    backend: AutomaskBackend,
    image: np.ndarray,
    params: AutomaskParams = AutomaskParams(),
    progress: Callable[[int, int], None] | None = None,
) -> list[Mask]:
    """Segment everything in ``image`` with ``backend``; masks sorted by area, largest first."""
    import torch
    from torchvision.ops.boxes import batched_nms, box_area

    amg = _amg()
    image = to_rgb8(image)
    height, width = image.shape[:2]
    output = params.output
    multimask = output.multimask
    crop_boxes, layer_idxs, grids, total = _crop_plan(height, width, params)
    per_batch = int(params.points_per_batch)
    done = 0
    if progress:
        progress(0, total)

    data = amg.MaskData()
    for crop_box, layer in zip(crop_boxes, layer_idxs):
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        backend.set_image(crop)
        points_for_crop = grids[layer] * np.array(crop.shape[:2])[None, ::-1]
        crop_data = amg.MaskData()
        for (points,) in amg.batch_iterator(per_batch, points_for_crop):
            batch = _process_batch(amg, backend, points, crop_box, (height, width), params, multimask)
            crop_data.cat(batch)
            done += 1
            if progress:
                progress(done, total)
        if _count(crop_data):
            if output is not OutputType.MULTI_ALL:
                scores = _nms_scores(crop_data, output)
                keep = batched_nms(
                    crop_data["boxes"].float(),
                    scores,
                    torch.zeros(len(crop_data["boxes"])),
                    iou_threshold=float(params.box_nms_thresh),
                )
                crop_data.filter(keep)
            crop_data["boxes"] = amg.uncrop_boxes_xyxy(crop_data["boxes"], crop_box)
            crop_data["points"] = amg.uncrop_points(crop_data["points"], crop_box)
            crop_data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(crop_data["rles"]))])
            data.cat(crop_data)

    if len(crop_boxes) > 1:
        backend.set_image(image)  # leave the whole image current (a cache hit)
    if not _count(data):
        return []
    if len(crop_boxes) > 1:
        scores = 1 / box_area(data["crop_boxes"].float())  # prefer masks from smaller crops
        keep = batched_nms(
            data["boxes"].float(), scores, torch.zeros(len(data["boxes"])), iou_threshold=float(params.crop_nms_thresh)
        )
        data.filter(keep)
    if params.min_mask_region_area > 0:
        data = _remove_small_regions(
            amg, data, int(params.min_mask_region_area), max(params.box_nms_thresh, params.crop_nms_thresh)
        )
    data.to_numpy()
    masks = [
        Mask(
            mask=amg.rle_to_mask(rle).astype(bool),
            score=float(data["iou_preds"][i]),
            prompt_index=-1,
            stability=float(data["stability_score"][i]),
        )
        for i, rle in enumerate(data["rles"])
    ]
    masks.sort(key=lambda m: m.area, reverse=True)
    return masks


def _count(data: Any) -> int:
    try:
        return len(data["rles"])
    except KeyError:
        return 0


def _nms_scores(data: Any, output: OutputType) -> Any:
    import torch

    if output is OutputType.MULTI_BEST:
        return data["iou_preds"].float()
    areas = torch.as_tensor(data["areas"], dtype=torch.float32)
    return areas if output is OutputType.MULTI_LARGEST else -areas


def _process_batch(
    amg: Any,
    backend: AutomaskBackend,
    points: np.ndarray,
    crop_box: list[int],
    orig_size: tuple[int, int],
    params: AutomaskParams,
    multimask: bool,
) -> Any:
    import torch

    orig_h, orig_w = orig_size
    logits, iou = backend.decode_points(points, multimask)
    k = logits.shape[1]
    data = amg.MaskData(
        masks=logits.flatten(0, 1).float(),
        iou_preds=iou.flatten(0, 1).float(),
        points=torch.as_tensor(points.repeat(k, axis=0)),
    )
    del logits
    if params.pred_iou_thresh > 0.0:
        data.filter(data["iou_preds"] > float(params.pred_iou_thresh))
    threshold = float(backend.mask_threshold)
    data["stability_score"] = amg.calculate_stability_score(
        data["masks"], threshold, float(params.stability_score_offset)
    )
    if params.stability_score_thresh > 0.0:
        data.filter(data["stability_score"] >= float(params.stability_score_thresh))
    data["masks"] = data["masks"] > threshold
    data["boxes"] = amg.batched_mask_to_box(data["masks"])
    keep = ~amg.is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
    if not torch.all(keep):
        data.filter(keep)
    if not params.include_image_edge and len(data["boxes"]):
        boxes = amg.uncrop_boxes_xyxy(data["boxes"], crop_box).float()
        tol = IMAGE_EDGE_TOLERANCE
        whole = (
            (boxes[:, 0] <= tol)
            & (boxes[:, 1] <= tol)
            & (boxes[:, 2] >= orig_w - 1 - tol)
            & (boxes[:, 3] >= orig_h - 1 - tol)
        )
        if torch.any(whole):
            data.filter(~whole)
    data["areas"] = data["masks"].flatten(1).sum(1).float()
    data["masks"] = amg.uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
    data["rles"] = amg.mask_to_rle_pytorch(data["masks"].cpu())
    del data["masks"]
    for key in ("boxes", "iou_preds", "stability_score", "areas"):
        data[key] = data[key].cpu()  # NMS across batches and crops runs on the CPU
    return data


def _remove_small_regions(amg: Any, data: Any, min_area: int, nms_thresh: float) -> Any:
    """Fill holes and drop islands smaller than ``min_area``, then re-run NMS preferring unchanged masks."""
    import torch
    from torchvision.ops.boxes import batched_nms

    new_masks, scores = [], []
    for rle in data["rles"]:
        mask = amg.rle_to_mask(rle)
        mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
        mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
        new_masks.append(torch.as_tensor(mask).unsqueeze(0))
        scores.append(0.0 if (changed_holes or changed_islands) else 1.0)
    masks = torch.cat(new_masks, dim=0)
    boxes = amg.batched_mask_to_box(masks)
    keep = batched_nms(boxes.float(), torch.as_tensor(scores), torch.zeros(len(boxes)), iou_threshold=nms_thresh)
    for i in keep.tolist():
        if scores[i] == 0.0:
            data["rles"][i] = amg.mask_to_rle_pytorch(masks[i].unsqueeze(0))[0]
            data["boxes"][i] = boxes[i]
    data.filter(keep)
    return data


class LowResBackend(Protocol):
    """An engine whose decoder hands back SAM's 256x256 logits (the ONNX engine)."""

    mask_threshold: float

    def set_image(self, image: np.ndarray) -> None: ...

    def frame(self) -> Any:
        """The current image's :class:`~qpsam.engines.lowres.Frame`."""

    def decode_points_lowres(self, points: np.ndarray, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """Logits (N, K, 256, 256) and predicted IoU (N, K), as numpy arrays."""


class _Candidates:
    """Masks that passed the filters of one crop: each kept as its tight box and the mask inside it."""

    def __init__(self) -> None:
        self.boxes: list[tuple[int, int, int, int]] = []  # XYXY, inclusive maxima, in the whole image
        self.patches: list[np.ndarray] = []
        self.iou: list[float] = []
        self.stability: list[float] = []
        self.areas: list[int] = []
        self.crop: list[tuple[int, int, int, int]] = []

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, keep: np.ndarray) -> None:
        for name in ("boxes", "patches", "iou", "stability", "areas", "crop"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])

    def extend(self, other: _Candidates) -> None:
        for name in ("boxes", "patches", "iou", "stability", "areas", "crop"):
            getattr(self, name).extend(getattr(other, name))


def generate_masks_lowres(
    backend: LowResBackend,
    image: np.ndarray,
    params: AutomaskParams = AutomaskParams(),
    progress: Callable[[int, int], None] | None = None,
) -> list[Mask]:
    """:func:`generate_masks` on low-resolution logits: filter by predicted IoU first, then compute stability
    and masks only inside each mask's region of interest, run NMS on boxes, and paint full-size masks only for
    the survivors. Same algorithm and parameters as SAM's generator; masks sorted by area, largest first."""
    from .lowres import Frame, nms

    image = to_rgb8(image)
    height, width = image.shape[:2]
    output = params.output
    crop_boxes, layer_idxs, grids, total = _crop_plan(height, width, params)
    per_batch = int(params.points_per_batch)
    done = 0
    if progress:
        progress(0, total)
    found = _Candidates()
    for crop_box, layer in zip(crop_boxes, layer_idxs):
        x0, y0, x1, y1 = (int(v) for v in crop_box)
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        backend.set_image(crop)
        frame: Frame = backend.frame()
        points = grids[layer] * np.array(crop.shape[:2])[None, ::-1]
        in_crop = _Candidates()
        for start in range(0, len(points), per_batch):
            batch = points[start : start + per_batch]
            for sub in range(0, len(batch), LOWRES_DECODE_POINTS):
                _filter_batch(backend, batch[sub : sub + LOWRES_DECODE_POINTS], frame, (x0, y0, x1, y1),
                              (height, width), params, in_crop)
            done += 1
            if progress:
                progress(done, total)
        if len(in_crop) and output is not OutputType.MULTI_ALL:
            if output is OutputType.MULTI_BEST:
                scores = np.asarray(in_crop.iou)
            else:
                areas = np.asarray(in_crop.areas, dtype=np.float64)
                scores = areas if output is OutputType.MULTI_LARGEST else -areas
            in_crop.take(nms(np.asarray(in_crop.boxes), scores, float(params.box_nms_thresh)))
        found.extend(in_crop)
    if len(crop_boxes) > 1:
        backend.set_image(image)  # leave the whole image current (a cache hit)
        if len(found):
            crops = np.asarray(found.crop, dtype=np.float64)
            scores = 1.0 / ((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1]))  # prefer smaller crops
            found.take(nms(np.asarray(found.boxes), scores, float(params.crop_nms_thresh)))
    masks = []
    for i, (bx0, by0, bx1, by1) in enumerate(found.boxes):
        full = np.zeros((height, width), dtype=bool)
        full[by0 : by1 + 1, bx0 : bx1 + 1] = found.patches[i]
        masks.append(Mask(mask=full, score=found.iou[i], prompt_index=-1, stability=found.stability[i]))
    if params.min_mask_region_area > 0 and masks:
        masks = _clean_regions(masks, int(params.min_mask_region_area),
                               max(params.box_nms_thresh, params.crop_nms_thresh))
    masks.sort(key=lambda m: m.area, reverse=True)
    return masks


def _filter_batch(
    backend: LowResBackend,
    points: np.ndarray,
    frame: Any,
    crop_box: tuple[int, int, int, int],
    orig_size: tuple[int, int],
    params: AutomaskParams,
    out: _Candidates,
) -> None:
    """Decode one batch of points and keep the masks that pass SAM's filters, computed at full resolution
    inside each mask's region of interest only."""
    from .lowres import LOW, box_of, roi_bounds, upsample_roi

    low, iou = backend.decode_points_lowres(points, params.output.multimask)
    low = low.reshape(-1, LOW, LOW)
    iou = iou.reshape(-1)
    if params.pred_iou_thresh > 0.0:
        keep = iou > float(params.pred_iou_thresh)
        low, iou = low[keep], iou[keep]
    threshold = float(backend.mask_threshold)
    offset = float(params.stability_score_offset)
    x0, y0, _, _ = crop_box
    orig_h, orig_w = orig_size
    # the region where a sample can exceed the lower stability threshold holds the other two as well
    for i, (ry0, ry1, rx0, rx1) in enumerate(roi_bounds(low, frame, min(threshold - offset, threshold))):
        if ry1 > ry0 and rx1 > rx0:
            logits = upsample_roi(low[i], frame, int(ry0), int(ry1), int(rx0), int(rx1))
            union = int(np.count_nonzero(logits > threshold - offset))
            inter = int(np.count_nonzero(logits > threshold + offset))
            mask = logits > threshold
        else:
            union = inter = 0
            mask = np.zeros((0, 0), dtype=bool)
        stability = inter / union if union else float("nan")  # SAM divides 0 by 0 too
        if params.stability_score_thresh > 0.0 and not stability >= float(params.stability_score_thresh):
            continue
        bx0, by0, bx1, by1 = box_of(mask)
        if mask.any():
            patch = mask[by0 : by1 + 1, bx0 : bx1 + 1]
            bx0, bx1, by0, by1 = bx0 + int(rx0), bx1 + int(rx0), by0 + int(ry0), by1 + int(ry0)
        else:
            patch = np.zeros((1, 1), dtype=bool)
        box = (bx0 + x0, by0 + y0, bx1 + x0, by1 + y0)  # in the whole image
        if _near_crop_edge(box, crop_box, (orig_w, orig_h)):
            continue
        if not params.include_image_edge:
            tol = IMAGE_EDGE_TOLERANCE
            if box[0] <= tol and box[1] <= tol and box[2] >= orig_w - 1 - tol and box[3] >= orig_h - 1 - tol:
                continue
        out.boxes.append(box)
        out.patches.append(patch)
        out.iou.append(float(iou[i]))
        out.stability.append(float(stability))
        out.areas.append(int(np.count_nonzero(patch)))
        out.crop.append(crop_box)


def _near_crop_edge(
    box: tuple[int, int, int, int], crop_box: tuple[int, int, int, int], size: tuple[int, int], tol: float = 20.0
) -> bool:
    """SAM's ``is_box_near_crop_edge``: a side within ``tol`` of the crop's edge but not of the image's."""
    image_box = (0, 0, size[0], size[1])
    return any(
        abs(b - c) <= tol and not abs(b - e) <= tol for b, c, e in zip(box, crop_box, image_box)
    )


def _clean_regions(masks: list[Mask], min_area: int, nms_thresh: float) -> list[Mask]:
    """Fill holes and drop islands smaller than ``min_area``, then NMS again preferring unchanged masks."""
    from .lowres import box_of, nms

    cleaned, scores, boxes = [], [], []
    for m in masks:
        mask, changed_holes = remove_small_regions(m.mask, min_area, mode="holes")
        mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
        cleaned.append(Mask(mask=mask.astype(bool), score=m.score, prompt_index=-1, stability=m.stability))
        scores.append(0.0 if (changed_holes or changed_islands) else 1.0)
        boxes.append(box_of(mask))
    keep = nms(np.asarray(boxes), np.asarray(scores), nms_thresh)
    return [cleaned[i] for i in sorted(keep.tolist())]
