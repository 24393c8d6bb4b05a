"""Overlay PNGs: masks drawn over the region they came from, for people to look at before they trust a run."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from qpsam.engines.base import to_rgb8
from qpsam.fileio import atomic_write
from qpsam.geometry import Region, to_region
from qpsam.objects import PathObject

__all__ = ["render_overlay", "write_preview"]


def _color(obj: PathObject, index: int) -> tuple[int, int, int]:
    if obj.color is not None:
        return tuple(obj.color[:3])  # type: ignore[return-value]
    if obj.path_class is not None and obj.path_class.color is not None:
        return tuple(obj.path_class.color[:3])  # type: ignore[return-value]
    # Golden-angle hues: neighbours get distinct colours.
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def render_overlay(image: np.ndarray, region: Region, objects: Iterable[PathObject], alpha: float = 0.35) -> np.ndarray:
    """An RGB uint8 picture of ``image`` (read from ``region``) with each object filled and outlined."""
    import cv2

    base = to_rgb8(image).copy()
    fill = base.copy()
    outlines = []
    for i, obj in enumerate(objects):
        geometry = to_region(obj.geometry, region)
        color = _color(obj, i)
        for poly in getattr(geometry, "geoms", [geometry]):
            if poly.geom_type != "Polygon":
                continue
            ext = np.round(np.asarray(poly.exterior.coords)).astype(np.int32)
            holes = [np.round(np.asarray(h.coords)).astype(np.int32) for h in poly.interiors]
            mask = np.zeros(base.shape[:2], np.uint8)
            cv2.fillPoly(mask, [ext], 1)
            if holes:
                cv2.fillPoly(mask, holes, 0)
            fill[mask.astype(bool)] = color
            outlines.append((ext, holes, color))
    out = cv2.addWeighted(fill, alpha, base, 1 - alpha, 0)
    for ext, holes, color in outlines:
        cv2.polylines(out, [ext, *holes], True, color, 1)
    return out


def write_preview(path: str | os.PathLike[str], image: np.ndarray, region: Region, objects: Iterable[PathObject]) -> Path:
    """Write the overlay as a PNG (atomically) and return its path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    Image.fromarray(render_overlay(image, region, objects)).save(png, format="PNG")
    return atomic_write(path, png.getvalue())
