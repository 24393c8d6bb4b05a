"""Ground-truth helpers the engine tests share: box prompts from a label image, and mask IoU."""

from __future__ import annotations

import numpy as np


def gt_boxes(gt: np.ndarray) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(label, (x0, y0, x1, y1)) of every labelled object of ``gt`` (0 is background), x1/y1 exclusive."""
    out = []
    for label in np.unique(gt):
        if label == 0:
            continue
        ys, xs = np.nonzero(gt == label)
        out.append((int(label), (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 for two empty masks)."""
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))
