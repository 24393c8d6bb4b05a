"""Masks from SAM's 256x256 decoder logits, upsampled only where they can be positive.

SAM upsamples every low-resolution mask to 1024x1024, crops the padding and resizes to the image (two bilinear
steps, ``align_corners=False``). Both steps are linear, so each output pixel is a bilinear sample of the 256x256
logits at one composite coordinate; computing that sample directly gives the same masks up to rounding at cell
borders. A bilinear sample is a convex combination of its four neighbours, so it can only exceed a threshold in
cells that have a corner above it: the region of interest is known from the low-resolution logits, and only that
region is computed. For nuclei on a 512x512 image that is a few hundred pixels per mask instead of 262,144.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Frame", "box_iou_matrix", "box_of", "masks_from_lowres", "nms", "roi_bounds", "upsample_roi"]

LOW = 256  # the decoder's mask side
PAD = 1024  # the encoder's input side


def _axis(n_out: int, n_resized: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Low-resolution neighbour indices and weights for each of ``n_out`` output pixels along one axis."""
    u = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_resized / n_out) - 0.5  # pixel in the 1024 frame
    u = np.maximum(u, 0.0)
    s = np.maximum((u + 0.5) * (LOW / PAD) - 0.5, 0.0)  # cell in the 256 frame
    i0 = np.minimum(np.floor(s).astype(np.int64), LOW - 1)
    i1 = np.minimum(i0 + 1, LOW - 1)
    return i0, i1, (s - i0).astype(np.float32)


@dataclass(frozen=True)
class Frame:
    """An image of ``original`` (h, w) pixels, resized to ``resized`` (h, w) inside the 1024 input."""

    original: tuple[int, int]
    resized: tuple[int, int]
    ys: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)
    xs: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ys", _axis(self.original[0], self.resized[0]))
        object.__setattr__(self, "xs", _axis(self.original[1], self.resized[1]))

    @classmethod
    def for_image(cls, height: int, width: int) -> Frame:
        """SAM's resize of the longest side to 1024 (``ResizeLongestSide.get_preprocess_shape``)."""
        scale = PAD / max(height, width)
        return cls((height, width), (int(height * scale + 0.5), int(width * scale + 0.5)))


def roi_bounds(low: np.ndarray, frame: Frame, threshold: float) -> np.ndarray:
    """(N, 4) ``y0, y1, x0, x1`` (end exclusive) of the output pixels that may exceed ``threshold``; empty
    masks get ``y0 == y1``."""
    low = low.reshape(-1, LOW, LOW)
    above: np.ndarray = low > threshold
    rows = np.asarray(above.any(axis=2))  # asarray: numpy's stubs type any() as possibly a scalar
    cols = np.asarray(above.any(axis=1))
    out = np.zeros((low.shape[0], 4), np.int64)
    (y0i, y1i, _), (x0i, x1i, _) = frame.ys, frame.xs
    ok_y = rows[:, y0i] | rows[:, y1i]
    ok_x = cols[:, x0i] | cols[:, x1i]
    any_y = ok_y.any(axis=1) & ok_x.any(axis=1)
    h, w = frame.original
    out[:, 0] = np.argmax(ok_y, axis=1)
    out[:, 1] = h - np.argmax(ok_y[:, ::-1], axis=1)
    out[:, 2] = np.argmax(ok_x, axis=1)
    out[:, 3] = w - np.argmax(ok_x[:, ::-1], axis=1)
    out[~any_y] = 0
    return out


def upsample_roi(low: np.ndarray, frame: Frame, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Logits of output pixels ``[y0:y1, x0:x1]`` from one 256x256 logit map, as SAM's two resizes give them."""
    i0y, i1y, wy = (a[y0:y1] for a in frame.ys)
    i0x, i1x, wx = (a[x0:x1] for a in frame.xs)
    r0, r1 = int(i0y[0]), int(i1y[-1]) + 1
    c0, c1 = int(i0x[0]), int(i1x[-1]) + 1
    sub = np.asarray(low[r0:r1, c0:c1], dtype=np.float32)
    wy = wy[:, None]
    rows = sub[i0y - r0] * (1.0 - wy) + sub[i1y - r0] * wy
    return rows[:, i0x - c0] * (1.0 - wx) + rows[:, i1x - c0] * wx


def masks_from_lowres(low: np.ndarray, frame: Frame, threshold: float = 0.0) -> np.ndarray:
    """(N, h, w) boolean masks of ``frame.original`` size from (N, 256, 256) logits."""
    low = low.reshape(-1, LOW, LOW)
    out = np.zeros((low.shape[0], *frame.original), dtype=bool)
    for i, (y0, y1, x0, x1) in enumerate(roi_bounds(low, frame, threshold)):
        if y1 > y0 and x1 > x0:
            out[i, y0:y1, x0:x1] = upsample_roi(low[i], frame, int(y0), int(y1), int(x0), int(x1)) > threshold
    return out


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """XYXY box of a mask with inclusive maxima (SAM's ``batched_mask_to_box``); (0, 0, 0, 0) when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0, 0, 0, 0
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def box_iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU of XYXY boxes (areas as ``(x2 - x1) * (y2 - y1)``, as torchvision counts them)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area[:, None] + area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first: one IoU matrix, one pass over rows."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    overlaps = box_iou_matrix(np.asarray(boxes)[order]) > threshold
    removed = np.zeros(order.size, dtype=bool)
    keep = []
    for i in range(order.size):
        if removed[i]:
            continue
        keep.append(i)
        removed |= overlaps[i]
    return order[np.asarray(keep, dtype=np.int64)]
