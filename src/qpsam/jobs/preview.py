"""Overlay PNGs: masks drawn over the region they came from, for people to look at before they trust a run."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from qpsam.fileio import atomic_write
from qpsam.geometry import Region, to_region
from qpsam.objects import PathObject
from qpsam.sam import to_rgb8

__all__ = ["render_overlay", "render_inputs", "write_preview", "PROMPT_COLOR", "BACKGROUND_COLOR", "AREA_COLOR"]

#: Foreground prompts (boxes, points, lines), background points (``Ignore*``) and the region annotation.
PROMPT_COLOR = (255, 220, 0)
BACKGROUND_COLOR = (0, 200, 255)
AREA_COLOR = (255, 255, 255)


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


def _pixels(geometry: Any) -> np.ndarray:
    return np.round(np.asarray(geometry.coords)).astype(np.int32)


def render_inputs(image: np.ndarray, region: Region, foreground: Iterable[PathObject] = (),
                  background: Iterable[PathObject] = (), areas: Iterable[Any] = ()) -> np.ndarray:
    """An RGB uint8 picture of what a run was given: the region annotations (outlined in :data:`AREA_COLOR`), the
    prompts (:data:`PROMPT_COLOR`: boxes, points as dots, lines) and the background points (:data:`BACKGROUND_COLOR`)."""
    import cv2

    out = to_rgb8(image).copy()
    for area in areas:
        for poly in getattr(to_region(area, region), "geoms", [to_region(area, region)]):
            if poly.geom_type == "Polygon":
                cv2.polylines(out, [_pixels(poly.exterior), *(_pixels(h) for h in poly.interiors)], True, AREA_COLOR, 1)
    for objects, color in ((foreground, PROMPT_COLOR), (background, BACKGROUND_COLOR)):
        for obj in objects:
            geometry = to_region(obj.geometry, region)
            for part in getattr(geometry, "geoms", [geometry]):
                if part.geom_type == "Point":
                    cv2.circle(out, (int(round(part.x)), int(round(part.y))), 3, color, -1)
                elif part.geom_type == "LineString":
                    cv2.polylines(out, [_pixels(part)], False, color, 1)
                    for x, y in _pixels(part):
                        cv2.circle(out, (int(x), int(y)), 2, color, -1)
                elif part.geom_type == "Polygon":
                    cv2.polylines(out, [_pixels(part.exterior)], True, color, 1)
    return out


def write_preview(path: str | os.PathLike[str], image: np.ndarray, region: Region, objects: Iterable[PathObject],
                  foreground: Iterable[PathObject] = (), background: Iterable[PathObject] = (),
                  areas: Iterable[Any] = ()) -> Path:
    """Write a PNG (atomically) of what ran, :func:`render_inputs`, on the left, beside the results,
    :func:`render_overlay`, on the right, with a 4-pixel grey gap; returns its path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = render_inputs(image, region, foreground, background, areas)
    results = render_overlay(image, region, objects)
    gap = np.full((inputs.shape[0], 4, 3), 128, np.uint8)
    png = io.BytesIO()
    Image.fromarray(np.concatenate([inputs, gap, results], axis=1)).save(png, format="PNG")
    return atomic_write(path, png.getvalue())
