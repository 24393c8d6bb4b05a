"""samapi's request fields as qpsam values: coordinates, indices, boxes, prompts, output types and planes.

Each reader checks what the pydantic schemas cannot (finite numbers, this server's limits, shapes of the
untyped video objects) and raises :class:`~qpsam.errors.PromptError` (422) with the values clipped.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ModelError, PromptError
from ..sam import OutputType, Prompt
from .echo import clip
from .limits import MAX_COORDINATE, MAX_INDEX, MAX_PROMPT_POINTS

__all__ = ["finite", "index", "output_type", "xyxy", "xywh_to_xyxy", "prompt", "plane"]


def finite(values: Any, what: str) -> tuple[float, ...]:
    """Pixel coordinates as floats, or :class:`PromptError` when one is not a finite number (JSON readers take
    Infinity and NaN) or lies beyond :data:`MAX_COORDINATE`."""
    try:
        if any(isinstance(v, (bool, str)) for v in values):
            raise TypeError
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise PromptError(f"{what} must hold numbers, got {clip(values)}") from None
    if not all(math.isfinite(v) for v in numbers):
        raise PromptError(f"{what} must hold finite numbers, got {clip(values)}")
    if not all(abs(v) <= MAX_COORDINATE for v in numbers):
        raise PromptError(f"{what} must lie within +-{MAX_COORDINATE:.0f} pixels (this server's limit), "
                          f"got {clip(values)}")
    return numbers


def index(value: Any, what: str, low: int = 0) -> int:
    """A frame, plane or object index: an integer from ``low`` to :data:`MAX_INDEX` (a Java int in QuPath)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromptError(f"{what} must be an integer, got {clip(value)}")
    if not low <= value <= MAX_INDEX:
        raise PromptError(f"{what} must be between {low} and {MAX_INDEX} (this server's limit), got {clip(value)}")
    return value


def output_type(value: str) -> OutputType:
    """samapi's ``output_type`` labels, case-insensitively (its own default ``"Single Mask"`` included)."""
    text = (value or "").strip()
    for member in OutputType:
        if text.lower() in (member.label.lower(), member.value, member.extension_name.lower()):
            return member
    labels = ", ".join(repr(m.label) for m in OutputType)
    raise PromptError(f"output_type {clip(value)} is not one of {labels}")


def _four(box: Any, what: str, order: str = "") -> tuple[float, float, float, float]:
    """The four finite numbers of a box; ``order`` names them in the messages where they are not x1, y1, x2, y2."""
    if not isinstance(box, (list, tuple)):
        raise PromptError(f"{what} must be a list of 4 numbers{order}, got {clip(box)}")
    if len(box) != 4:
        raise PromptError(f"{what} must have 4 numbers{order}, got {len(box)}")
    a, b, c, d = finite(box, what)
    return a, b, c, d


def xyxy(box: list[float], what: str) -> tuple[float, float, float, float]:
    """An ``[x1, y1, x2, y2]`` box (samapi's ``bbox``)."""
    x1, y1, x2, y2 = _four(box, what)
    if x2 < x1 or y2 < y1:
        raise PromptError(f"{what} must be [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1, got {clip(box)}")
    return x1, y1, x2, y2


def xywh_to_xyxy(box: list[float], what: str) -> tuple[float, float, float, float]:
    """An ``[x, y, w, h]`` box (SAM3's boxes) as ``(x1, y1, x2, y2)``."""
    x, y, w, h = _four(box, what, " [x, y, w, h]")
    if w < 0 or h < 0:
        raise PromptError(f"{what} must have width and height >= 0, got {clip(box)}")
    return x, y, x + w, y + h


def prompt(bbox: Any, point_coords: Any, point_labels: Any, what: str = "request") -> Prompt:
    """A :class:`Prompt` from samapi's fields; empty lists count as absent."""
    box = xyxy(bbox, f"{what} bbox") if bbox else None
    coords = point_coords or []
    labels = point_labels if point_labels is not None else ([] if not coords else None)
    if labels is None:
        raise PromptError(f"{what} has point_coords but no point_labels (1 foreground, 0 background)")
    if not isinstance(coords, (list, tuple)) or not isinstance(labels, (list, tuple)):
        raise PromptError(f"{what} point_coords and point_labels must be lists, got {clip(coords)} and {clip(labels)}")
    if len(coords) != len(labels):
        raise PromptError(f"{what} has {len(coords)} point_coords but {len(labels)} point_labels")
    if len(coords) > MAX_PROMPT_POINTS:
        raise PromptError(f"{what} has {len(coords)} point_coords; this server's limit is {MAX_PROMPT_POINTS}")
    points = []
    for p in coords:
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise PromptError(f"{what} point_coords must be [x, y] pairs, got {clip(p)}")
        points.append(finite(p, f"{what} point_coords"))
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer() for v in labels):
        raise PromptError(f"{what} point_labels must be integers (1 foreground, 0 background), got {clip(labels)}")
    if any(int(v) not in (0, 1) for v in labels):
        raise PromptError(f"{what} point_labels must be 0 (background) or 1 (foreground), got {clip(labels)}")
    try:
        return Prompt(box=box, points=tuple((x, y) for x, y in points), labels=tuple(int(v) for v in labels))
    except ModelError as exc:
        raise PromptError(f"{what}: {exc}") from None


def plane(axes: str, frame: int, plane_position: int) -> dict[str, int]:
    """The QuPath plane of a video frame: ``axes`` says whether frames run through z (XYZ) or t (XYT)."""
    if axes == "XYZ":
        return {"c": -1, "z": int(frame), "t": int(plane_position)}
    return {"c": -1, "z": int(plane_position), "t": int(frame)}
