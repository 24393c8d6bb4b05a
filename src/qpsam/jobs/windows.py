"""Where to look: the regions (context windows) a detection reads around its prompts.

A window is read at a downsample chosen so that each prompt's object fits comfortably in the model's input
(``model_input`` pixels a side, SAM's 1024). The image encoder runs once per window, so windows are planned to be
few: each prompt, with some context around it, lies wholly inside exactly one window, and windows are packed
greedily (rows of windows from the top, windows along each row from the left), each spanning up to ``span`` of
the model input (SAM enlarges it to the input; small objects segment better so). On a slide covered with nuclei
that is about one window per window-side squared, plus the overlap a nucleus and its context need: 36 windows on
4096² at the default span of 0.75, 25 at a span of 1 (56 with the earlier per-group planning). A window is never
larger than ``model_input`` pixels a side at its downsample, so a whole slide is never read at full resolution.
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


Bounds = tuple[float, float, float, float]
_Member = tuple[Bounds, PathObject]  # (what of the image the prompt needs: itself and its context, the prompt)


def plan_windows(
    prompts: Sequence[PathObject],
    width: int,
    height: int,
    model_input: int = 1024,
    fill: float = 0.5,
    margin: float = 0.25,
    point_context: float = 64.0,
    downsample: float | None = None,
    context: float = 32.0,
    span: float = 0.75,
) -> list[Window]:
    """Group prompt objects into windows inside a ``width`` x ``height`` image; each prompt is in exactly one.

    ``fill`` is the largest share of the model input one prompt may take; around each prompt its window keeps
    ``margin`` times the prompt's size, and at least ``context`` pixels at the window's downsample, where the image
    has them. A window spans at most ``span`` times the model input at its downsample, and SAM enlarges it to
    the model input: small objects segment better enlarged (box prompts on the nuclei slides of
    ``benchmarks/bench_wsi.py``: recall 0.981 at 0.75 against 0.965 at 1), for more windows. A fixed
    ``downsample`` overrides the choice; a prompt larger than a window at that downsample gets a window centred
    on it.
    """
    if width < 1 or height < 1:
        raise JobError(f"image size must be positive, got {width} x {height}")
    if downsample is not None and not downsample > 0:
        raise JobError(f"downsample must be > 0, got {downsample}")
    if model_input < 16:
        raise JobError(f"model_input must be at least 16 pixels, got {model_input}")
    if not 0 < span <= 1 or model_input * span < 16:
        raise JobError(f"span must be in (0, 1] and leave a window of 16 pixels at least, got {span}")
    groups: dict[tuple[int, int, float], list[_Member]] = {}
    for obj in prompts:
        ext = _extent(obj.geometry, point_context)
        side = max(ext[2] - ext[0], ext[3] - ext[1])
        d = downsample if downsample is not None else _downsample_for(side, model_input, fill)
        need = _need(ext, max(context * d, margin * side), width, height, _usable(model_input * span, d), d)
        groups.setdefault((obj.plane.z, obj.plane.t, d), []).append((need, obj))

    windows: list[Window] = []
    for (z, t, d), members in groups.items():
        usable = _usable(model_input * span, d)
        plane = ImagePlane(-1, z, t)
        for row in _pack(members, 1, usable):
            for cell in _pack(row, 0, usable):
                x0, y0 = min(m[0][0] for m in cell), min(m[0][1] for m in cell)
                x1, y1 = max(m[0][2] for m in cell), max(m[0][3] for m in cell)
                windows.append(Window(Region(x0, y0, x1 - x0, y1 - y0, d, plane), tuple(m[1] for m in cell)))
    return windows


def _usable(side: float, d: float) -> float:
    """Whole pixels a window may span at downsample ``d`` (at most ``side`` once read at ``d``)."""
    return float(math.floor(side * d))


def _need(ext: Bounds, pad: float, width: int, height: int, usable: float, d: float) -> Bounds:
    """The part of the image a prompt's window must hold: its extent and ``pad`` around it, clipped to the image,
    and at most ``usable`` a side (then centred on the prompt)."""
    out: list[tuple[float, float]] = []
    for lo, hi, limit in ((ext[0], ext[2], width), (ext[1], ext[3], height)):
        # whole pixels, so that a window spanning its members' needs is never wider than ``usable``
        a, b = float(max(0, math.floor(lo - pad))), float(min(limit, math.ceil(hi + pad)))
        if hi < 0 or lo > limit or b - a < min(d, limit):
            raise JobError(f"prompt at {ext} lies outside the image ({width} x {height})")
        if b - a > usable:
            centre = (max(0.0, lo) + min(float(limit), hi)) / 2
            a = float(max(0, min(math.floor(centre - usable / 2), limit - usable)))
            b = a + usable
        out.append((a, b))
    (x0, x1), (y0, y1) = out
    return x0, y0, x1, y1


def _pack(members: list[_Member], axis: int, length: float) -> list[list[_Member]]:
    """Split ``members`` into runs along ``axis`` (0: x, 1: y), each within ``length``: greedily, a run starting
    where the first member left starts and taking every member that ends within ``length`` of it. In one
    dimension this gives the fewest runs."""
    lo, hi = axis, axis + 2
    left = sorted(members, key=lambda m: (m[0][lo], m[0][hi]))
    runs: list[list[_Member]] = []
    while left:
        end = left[0][0][lo] + length
        run: list[_Member] = []
        rest: list[_Member] = []
        i = 0
        while i < len(left) and left[i][0][lo] <= end:
            (run if left[i][0][hi] <= end else rest).append(left[i])
            i += 1
        runs.append(run)
        left = rest + left[i:]  # still sorted: every member of rest starts before every member after i
    return runs
