"""Where to look: the regions (context windows) a detection reads around its prompts.

A window is read at a downsample chosen so that each prompt's object fits comfortably in the model's input
(``model_input`` pixels a side, SAM's 1024), and nearby prompts on the same plane share a window so the image
encoder runs once for them. A window is never larger than ``model_input`` pixels a side at its downsample, so a whole
slide is never read at full resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from shapely.geometry.base import BaseGeometry

from qpsam.errors import JobError
from qpsam.geometry import Region
from qpsam.objects import ImagePlane, PathObject

__all__ = ["Window", "plan_windows"]


@dataclass(frozen=True)
class Window:
    """A region to read and the prompt objects whose masks it yields."""

    region: Region
    prompts: tuple[PathObject, ...]


def _extent(geometry: BaseGeometry, point_context: float) -> tuple[float, float, float, float]:
    minx, miny, maxx, maxy = geometry.bounds
    if geometry.geom_type in ("Point", "MultiPoint", "LineString"):
        # Points say where an object is, not how big: give them context to grow into.
        minx, miny, maxx, maxy = minx - point_context, miny - point_context, maxx + point_context, maxy + point_context
    return minx, miny, maxx, maxy


def _downsample_for(side: float, model_input: int, fill: float) -> float:
    """The smallest power-of-two downsample >= 1 at which ``side`` pixels take at most ``fill`` of the input."""
    if side <= model_input * fill:
        return 1.0
    return float(2 ** math.ceil(math.log2(side / (model_input * fill))))


def plan_windows(
    prompts: Sequence[PathObject],
    width: int,
    height: int,
    model_input: int = 1024,
    fill: float = 0.5,
    margin: float = 0.25,
    point_context: float = 64.0,
    downsample: float | None = None,
) -> list[Window]:
    """Group prompt objects into windows inside a ``width`` x ``height`` image.

    ``fill`` is the largest share of the model input one prompt may take; ``margin`` the context added around a
    group, as a share of its size (at least 16 pixels at the window's downsample); a fixed ``downsample``
    overrides the choice.
    """
    if width < 1 or height < 1:
        raise JobError(f"image size must be positive, got {width} x {height}")
    if downsample is not None and not downsample > 0:
        raise JobError(f"downsample must be > 0, got {downsample}")
    groups: dict[tuple[int, int, float], list[tuple[tuple[float, float, float, float], PathObject]]] = {}
    for obj in prompts:
        ext = _extent(obj.geometry, point_context)
        side = max(ext[2] - ext[0], ext[3] - ext[1])
        d = downsample if downsample is not None else _downsample_for(side, model_input, fill)
        groups.setdefault((obj.plane.z, obj.plane.t, d), []).append((ext, obj))

    windows: list[Window] = []
    for (z, t, d), members in groups.items():
        capacity = model_input * d
        members.sort(key=lambda m: (m[0][1], m[0][0]))
        open_groups: list[list] = []  # [bounds, objects]
        for ext, obj in members:
            for group in open_groups:
                b = group[0]
                u = (min(b[0], ext[0]), min(b[1], ext[1]), max(b[2], ext[2]), max(b[3], ext[3]))
                if (u[2] - u[0]) * (1 + 2 * margin) <= capacity and (u[3] - u[1]) * (1 + 2 * margin) <= capacity:
                    group[0] = u
                    group[1].append(obj)
                    break
            else:
                open_groups.append([ext, [obj]])
        for bounds, objs in open_groups:
            windows.append(Window(_window_region(bounds, width, height, d, capacity, margin, ImagePlane(-1, z, t)),
                                  tuple(objs)))
    return windows


def _window_region(bounds, width: int, height: int, d: float, capacity: float, margin: float,
                   plane: ImagePlane) -> Region:
    minx, miny, maxx, maxy = bounds
    pad_x = max(16 * d, margin * (maxx - minx))
    pad_y = max(16 * d, margin * (maxy - miny))
    x0, y0 = max(0.0, math.floor(minx - pad_x)), max(0.0, math.floor(miny - pad_y))
    x1, y1 = min(float(width), math.ceil(maxx + pad_x)), min(float(height), math.ceil(maxy + pad_y))
    # A prompt lying wholly outside the image still gets a (clipped) window; never an empty one.
    if x1 - x0 < d or y1 - y0 < d:
        raise JobError(f"prompt at {bounds} lies outside the image ({width} x {height})")
    x1, y1 = min(x1, x0 + capacity), min(y1, y0 + capacity)
    return Region(x0, y0, x1 - x0, y1 - y0, d, plane)
