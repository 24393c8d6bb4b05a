"""SAM prompts from QuPath objects, the way qupath-extension-sam builds them.

* Foreground prompts are annotations with a rectangle ROI (a box), a points ROI (its points, all in one prompt) or a
  line/polyline ROI (its vertices as points).
* Background points are the points (and line vertices) of annotations whose class is an "ignored" class (name
  ending in ``*``, such as ``Ignore*``). Every foreground prompt gets all background points, listed first with
  label 0, as the extension sends them.
* Coordinates go from full-resolution image pixels to the pixels of the region read at its downsample ``d``:
  points ``floor((p - R.x) / d)``, kept only inside the region image and without duplicates; box corners from the
  ROI's integer bounds ``[floor(min), ceil(max)]`` as ``x1 = trunc((minX - R.x) / d)`` and
  ``x2 = round((maxX - R.x) / d)`` (not clipped).

One deliberate difference: by default only objects on the region's z-slice and time point are used (the extension
ignores the plane in 2-D mode, so prompts from other slices leak in). Pass ``match_plane=False`` for its behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from shapely.geometry import LineString, MultiPoint, Point, Polygon
from shapely.geometry.base import BaseGeometry

from qpsam.geometry import Region
from qpsam.objects import ObjectType, PathObject
from qpsam.sam import Prompt

__all__ = [
    "PromptSet",
    "box_in_region",
    "points_in_region",
    "prompts_for_boxes",
    "prompts_from_objects",
    "select_prompt_objects",
    "vertices",
]

_POINT_KINDS = ("points",)
_LINE_KINDS = ("line", "polyline")


@dataclass(frozen=True)
class PromptSet:
    """The prompt objects found among a set of objects, split into foreground and background."""

    foreground: tuple[PathObject, ...]
    background: tuple[PathObject, ...]


def _on_plane(obj: PathObject, region: Region | None) -> bool:
    if region is None:
        return True
    return obj.plane.z == region.plane.z and obj.plane.t == region.plane.t


def select_prompt_objects(
    objects: Iterable[PathObject],
    permit_lines: bool = True,
    region: Region | None = None,
) -> PromptSet:
    """Split annotations into foreground and background prompt objects (other objects are ignored).

    With a ``region``, only objects on its z and t are kept.
    """
    foreground: list[PathObject] = []
    background: list[PathObject] = []
    point_kinds = _POINT_KINDS + (_LINE_KINDS if permit_lines else ())
    for obj in objects:
        if obj.object_type is not ObjectType.ANNOTATION or obj.geometry.is_empty or not _on_plane(obj, region):
            continue
        kind = obj.roi_kind
        ignored = obj.path_class is not None and obj.path_class.is_ignored
        if ignored and kind in point_kinds:
            background.append(obj)
        elif not ignored and (kind == "rectangle" or kind in point_kinds):
            foreground.append(obj)
    return PromptSet(tuple(foreground), tuple(background))


def vertices(geometry: BaseGeometry) -> list[tuple[float, float]]:
    """The points a prompt object gives: its points, or the vertices of its line or outline."""
    if isinstance(geometry, Point):
        return [(geometry.x, geometry.y)]
    if isinstance(geometry, MultiPoint):
        return [(p.x, p.y) for p in geometry.geoms]
    if isinstance(geometry, LineString):
        return [(x, y) for x, y in geometry.coords]
    if isinstance(geometry, Polygon):
        return [(x, y) for x, y in list(geometry.exterior.coords)[:-1]]
    return [(x, y) for x, y in _all_coords(geometry)]


def _all_coords(geometry: BaseGeometry) -> Iterable[tuple[float, float]]:
    import shapely

    return [tuple(c) for c in shapely.get_coordinates(geometry)]


def points_in_region(points: Iterable[tuple[float, float]], region: Region) -> list[tuple[int, int]]:
    """Image points as integer region pixels, dropping those outside the region image and duplicates."""
    rows, cols = region.shape
    out: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for px, py in points:
        x = math.floor((px - region.x) / region.downsample)
        y = math.floor((py - region.y) / region.downsample)
        if 0 <= x < cols and 0 <= y < rows and (x, y) not in seen:
            seen.add((x, y))
            out.append((x, y))
    return out


def box_in_region(geometry: BaseGeometry, region: Region) -> tuple[int, int, int, int]:
    """The XYXY box of a rectangle ROI in region pixels (not clipped)."""
    minx, miny, maxx, maxy = geometry.bounds
    minx, miny, maxx, maxy = math.floor(minx), math.floor(miny), math.ceil(maxx), math.ceil(maxy)
    d = region.downsample
    return (
        math.trunc((minx - region.x) / d),
        math.trunc((miny - region.y) / d),
        _round_half_up((maxx - region.x) / d),
        _round_half_up((maxy - region.y) / d),
    )


def _round_half_up(value: float) -> int:
    # Java's Math.round rounds halves up (towards positive infinity), unlike Python's banker's round().
    return math.floor(value + 0.5)


def prompts_from_objects(
    objects: Iterable[PathObject] | PromptSet,
    region: Region,
    permit_lines: bool = True,
    match_plane: bool = True,
) -> list[Prompt]:
    """One :class:`Prompt` per foreground object, in region pixels; ``Prompt.key`` is the object's id.

    Point prompts with no point left inside the region are skipped.
    """
    if isinstance(objects, PromptSet):
        found = objects
    else:
        found = select_prompt_objects(objects, permit_lines, region if match_plane else None)
    background = points_in_region((p for obj in found.background for p in vertices(obj.geometry)), region)
    prompts: list[Prompt] = []
    for obj in found.foreground:
        if obj.roi_kind == "rectangle":
            box = box_in_region(obj.geometry, region)
            prompts.append(Prompt(box=box, points=tuple(background), labels=(0,) * len(background), key=obj.id))
            continue
        fg = [p for p in points_in_region(vertices(obj.geometry), region) if p not in background]
        if not fg:
            continue
        points = list(background) + fg
        labels = [0] * len(background) + [1] * len(fg)
        prompts.append(Prompt(points=tuple(points), labels=tuple(labels), key=obj.id))
    return prompts


def prompts_for_boxes(boxes: Sequence[tuple[float, float, float, float]]) -> list[Prompt]:
    """Plain box prompts (XYXY, engine image pixels), keyed by their index."""
    return [Prompt(box=tuple(b), key=i) for i, b in enumerate(boxes)]  # type: ignore[arg-type]
