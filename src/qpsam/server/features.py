"""Masks to the GeoJSON features samapi answers with, in the pixel frame of the image that was sent."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping
from shapely.geometry.base import BaseGeometry

from ..geometry import mask_to_geometry
from ..sam import Mask

__all__ = ["geometry_json", "mask_features", "feature"]

_DECIMALS = 6


def _round_coords(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], (int, float, np.floating, np.integer)):
            return [round(float(v), _DECIMALS) for v in value]
        return [_round_coords(v) for v in value]
    return value


def _ring_json(ring: Any) -> list[list[float]]:
    xy = shapely.get_coordinates(ring)
    # Traced masks lie on pixel corners: whole numbers need no rounding (the common case, one array pass).
    if np.array_equal(xy, np.rint(xy)):
        return xy.tolist()
    return [[round(x, _DECIMALS), round(y, _DECIMALS)] for x, y in xy.tolist()]


def _polygon_json(polygon: Polygon) -> list[list[list[float]]]:
    return [_ring_json(polygon.exterior), *(_ring_json(r) for r in polygon.interiors)]


def geometry_json(geometry: BaseGeometry, plane: dict[str, int] | None = None) -> dict[str, Any]:
    """A GeoJSON geometry dict (``type`` then ``coordinates``, then the non-standard ``plane``)."""
    out: dict[str, Any]
    if isinstance(geometry, Polygon) and not geometry.is_empty and not geometry.has_z:
        out = {"type": "Polygon", "coordinates": _polygon_json(geometry)}
    elif isinstance(geometry, MultiPolygon) and not geometry.is_empty and not geometry.has_z:
        out = {"type": "MultiPolygon", "coordinates": [_polygon_json(p) for p in geometry.geoms]}
    else:
        raw = mapping(geometry)
        out = {"type": raw["type"], "coordinates": _round_coords(raw["coordinates"])}
    if plane is not None:
        out["plane"] = dict(plane)
    return out


def feature(geometry: BaseGeometry, properties: dict[str, Any], plane: dict[str, int] | None = None) -> dict[str, Any]:
    """One Feature with members in samapi's order: ``type``, ``geometry``, ``properties``."""
    return {"type": "Feature", "geometry": geometry_json(geometry, plane), "properties": properties}


def mask_features(
    masks: Sequence[Mask] | Iterable[Mask],
    model_type: str,
    *,
    first_index: int = -1,
    with_quality: bool = True,
    object_ids: Sequence[int] | None = None,
    plane: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Features for masks in model order.

    ``object_idx`` is ``first_index + position`` (samapi numbers image results from -1; the QuPath extension
    turns it into a class name), or ``object_ids[position]`` when given (video). Each feature carries the
    quality of its *own* mask. Empty masks give no feature, but keep their position in the numbering.
    Geometry keeps holes and separate pieces (Polygon or MultiPolygon) with pixel-corner coordinates.
    """
    out: list[dict[str, Any]] = []
    for position, m in enumerate(masks):
        geometry = mask_to_geometry(m.mask)
        if geometry is None or geometry.is_empty:
            continue
        idx = object_ids[position] if object_ids is not None else first_index + position
        props: dict[str, Any] = {"object_idx": int(idx), "label": "object"}
        if with_quality:
            props["quality"] = float(m.score)
        props["sam_model"] = model_type
        out.append(feature(geometry, props, plane))
    return out
