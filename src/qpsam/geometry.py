"""Masks to polygons and coordinates between a region and the full-resolution image.

Pixel-edge convention (QuPath's): integer coordinates are pixel *corners*. In a region read at
``downsample`` d from (x, y), region pixel (col, row) covers the full-resolution square
``[x + d*col, x + d*(col+1)] x [y + d*row, y + d*(row+1)]``. A mask with only pixel (0, 0) set thus
becomes the unit square (scaled by d and shifted by the region's origin).

Contours are traced with OpenCV on the mask upsampled by two, which places every vertex on a pixel
corner exactly (see ``benchmarks/bench_contours.py`` for the comparison with scikit-image's
marching squares, which cuts corners and lands on pixel centres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from .errors import GeometryError
from .objects import DEFAULT_PLANE, ImagePlane

__all__ = ["Region", "mask_to_geometry", "masks_to_geometries", "to_image", "to_region"]


@dataclass(frozen=True)
class Region:
    """A rectangle of the full-resolution image read at a downsample, on one plane.

    ``width`` and ``height`` are in full-resolution pixels, as in QuPath's ``RegionRequest``.
    """

    x: float
    y: float
    width: float
    height: float
    downsample: float = 1.0
    plane: ImagePlane = DEFAULT_PLANE

    def __post_init__(self) -> None:
        if not self.downsample > 0:
            raise GeometryError(f"region downsample must be > 0, got {self.downsample!r}")
        if not (self.width > 0 and self.height > 0):
            raise GeometryError(f"region width and height must be > 0, got {self.width!r} x {self.height!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the pixels a read of this region returns (QuPath rounds)."""
        return (
            max(1, int(round(self.height / self.downsample))),
            max(1, int(round(self.width / self.downsample))),
        )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.width, self.y + self.height)

    @classmethod
    def full(cls, width: int, height: int, downsample: float = 1.0, plane: ImagePlane = DEFAULT_PLANE) -> "Region":
        return cls(0, 0, width, height, downsample, plane)


def to_image(geometry: BaseGeometry, region: Region) -> BaseGeometry:
    """Region pixel coordinates -> full-resolution image coordinates."""
    d = region.downsample
    return affinity.affine_transform(geometry, [d, 0, 0, d, region.x, region.y])


def to_region(geometry: BaseGeometry, region: Region) -> BaseGeometry:
    """Full-resolution image coordinates -> region pixel coordinates."""
    d = region.downsample
    return affinity.affine_transform(geometry, [1 / d, 0, 0, 1 / d, -region.x / d, -region.y / d])


def _trace(mask: np.ndarray) -> list[Polygon]:
    """Exact pixel-edge polygons (with holes) of a 2-D boolean mask, in mask pixel coordinates."""
    import cv2

    # The bounding box from per-axis any(): a full nonzero() of a large mask costs more than the trace itself.
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = mask[r0:r1, c0:c1].astype(np.uint8)
    # Upsampling by two makes OpenCV's boundary-pixel centres map exactly onto pixel corners:
    # a boundary pixel at upsampled index u lies on the original corner (u + 1) // 2.
    big = np.zeros((2 * crop.shape[0] + 2, 2 * crop.shape[1] + 2), np.uint8)
    big[1:-1, 1:-1] = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    rings: list[np.ndarray] = []
    for contour in contours:
        pts = contour[:, 0, :].astype(np.int64) - 1  # undo the 1-pixel frame
        pts = (pts + 1) // 2
        pts = pts + np.array([c0, r0])
        rings.append(_clean_ring(pts))
    polygons: list[Polygon] = []
    for i, (_next, _prev, _child, parent) in enumerate(hierarchy):
        if parent >= 0:
            continue
        holes = []
        child = hierarchy[i][2]
        while child >= 0:
            if len(rings[child]) >= 3:
                holes.append(rings[child])
            child = hierarchy[child][0]
        if len(rings[i]) < 3:
            continue
        polygons.append(Polygon(rings[i], holes))
    return polygons


def _clean_ring(pts: np.ndarray) -> np.ndarray:
    """Drop repeated and collinear vertices (the 2x trace doubles some corners)."""
    for _ in range(2):
        if len(pts) < 3:
            return pts
        keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
        pts = pts[keep]
        if len(pts) < 3:
            return pts
        prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
        cross = (pts[:, 0] - prev[:, 0]) * (nxt[:, 1] - pts[:, 1]) - (pts[:, 1] - prev[:, 1]) * (nxt[:, 0] - pts[:, 0])
        pts = pts[cross != 0]
    return pts


def mask_to_geometry(
    mask: np.ndarray,
    region: Region | None = None,
    *,
    min_area: float = 0.0,
    simplify: float | None = None,
) -> Polygon | MultiPolygon | None:
    """Turn a boolean mask read from ``region`` into image-coordinate geometry.

    Holes and every separate piece are kept (a MultiPolygon when there are several). Pieces whose
    area in full-resolution pixels is below ``min_area`` are dropped, as are holes below it.
    ``simplify`` is a Douglas-Peucker tolerance in full-resolution pixels. Returns ``None`` for an
    empty mask.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise GeometryError(f"mask must be 2-D, got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number):
            raise GeometryError(f"mask must be boolean or numeric, got dtype {mask.dtype}")
        mask = mask > 0
    if region is not None and mask.shape != region.shape:
        # The region only fixes the transform; a mask of another size is allowed as long as the
        # caller knows what it is doing, but a transposed mask is a common mistake worth naming.
        if mask.shape == region.shape[::-1] and mask.shape[0] != mask.shape[1]:
            raise GeometryError(
                f"mask shape {mask.shape} is the transpose of the region's {region.shape} (rows, cols)"
            )
    pieces = _trace(mask)
    if not pieces:
        return None
    traced: BaseGeometry = pieces[0] if len(pieces) == 1 else MultiPolygon(pieces)
    # Pixels touching only at a corner give self-touching rings; make_valid splits them into pieces.
    geometry: BaseGeometry | None = traced if traced.is_valid else _polygonal(shapely.make_valid(traced))
    if geometry is not None and region is not None:
        geometry = to_image(geometry, region)
    if geometry is not None and simplify:
        geometry = _polygonal(geometry.simplify(simplify, preserve_topology=True))
    return _drop_small(geometry, min_area)


def _polygonal(geometry: BaseGeometry) -> Polygon | MultiPolygon | None:
    parts = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, (Polygon, MultiPolygon))]
    polys: list[Polygon] = []
    for part in parts:
        polys.extend(part.geoms if isinstance(part, MultiPolygon) else [part])
    polys = [p for p in polys if not p.is_empty]
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _drop_small(geometry: BaseGeometry | None, min_area: float) -> Polygon | MultiPolygon | None:
    if geometry is None or min_area <= 0:
        return geometry  # type: ignore[return-value]
    kept = []
    for poly in getattr(geometry, "geoms", [geometry]):
        if poly.area < min_area:
            continue
        holes = [h for h in poly.interiors if Polygon(h).area >= min_area]
        kept.append(Polygon(poly.exterior, holes))
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else MultiPolygon(kept)


def masks_to_geometries(
    masks: np.ndarray, region: Region | None = None, *, min_area: float = 0.0, simplify: float | None = None
) -> list[Polygon | MultiPolygon | None]:
    """:func:`mask_to_geometry` for a stack of masks (N, H, W)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise GeometryError(f"masks must be a stack of shape (N, H, W), got {masks.shape}")
    return [mask_to_geometry(m, region, min_area=min_area, simplify=simplify) for m in masks]
