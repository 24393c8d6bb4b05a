"""ROIs of a ``data.qpdata``: QuPath's ROI serialisation proxies to shapely geometries and back.

ROIs written for new objects are the ones the file's QuPath version makes when it imports the same GeoJSON
(:func:`roi_class`): points -> ``PointsROI``, two-point lines -> ``LineROI``, longer ones -> ``PolylineROI``, an
axis-aligned rectangle in any corner order -> ``RectangleROI``, an object flagged ``ellipse`` -> ``EllipseROI`` (its
bounds), another polygon without holes -> ``PolygonROI``, holes and multipolygons -> ``GeometryROI`` (WKB, doubles).
Like QuPath, they keep coordinates as 32-bit floats and drop repeated vertices.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from qpsam.errors import ProjectError
from qpsam.objects import ImagePlane, is_rectangle, roi_kind

from .. import javaser as J
from .values import ROI_PKG, Pool, java_object, version_tuple

__all__ = ["ellipse_polygon", "geometry_to_roi", "roi_class", "roi_to_geometry"]


def ellipse_polygon(x: float, y: float, x2: float, y2: float, n: int = 100) -> Polygon:
    """The polygon QuPath (JTS ``GeometricShapeFactory.createEllipse``) makes of an ellipse's bounding box."""
    rx, ry = (x2 - x) / 2.0, (y2 - y) / 2.0
    cx, cy = x + rx, y + ry
    pts = []
    for i in range(n):
        angle = i * (2 * math.pi / n)
        pts.append((rx * math.cos(angle) + cx, ry * math.sin(angle) + cy))
    return Polygon(pts)


def _floats(array: Any) -> list[float]:
    if isinstance(array, J.JavaArray):
        return [float(v) for v in np.asarray(array.values, dtype=np.float64)]
    return []


def roi_to_geometry(roi: Any, where: str) -> tuple[BaseGeometry, ImagePlane, bool]:
    """(geometry, plane, is_ellipse) of a ROI proxy object."""
    if not isinstance(roi, J.JavaObject):
        raise ProjectError(f"{where}: has no ROI")
    name = roi.class_name
    plane = ImagePlane(int(roi.get("c", -1)), int(roi.get("z", 0)), int(roi.get("t", 0)))
    if name in (ROI_PKG + "PolygonROI$SerializationProxy", ROI_PKG + "PolylineROI$SerializationProxy",
                ROI_PKG + "PointsROI$SerializationProxy"):
        pts = list(zip(_floats(roi.get("x")), _floats(roi.get("y"))))
        if name.startswith(ROI_PKG + "Points"):
            return (Point(pts[0]) if len(pts) == 1 else MultiPoint(pts)), plane, False
        if name.startswith(ROI_PKG + "Polyline"):
            return LineString(pts), plane, False
        if not pts:
            return Polygon(), plane, False
        while len(pts) < 3:
            pts.append(pts[-1])
        return Polygon(pts), plane, False
    if name in (ROI_PKG + "RectangleROI$SerializationProxy", ROI_PKG + "EllipseROI$SerializationProxy",
                ROI_PKG + "LineROI$SerializationProxy"):
        x, y, x2, y2 = (float(roi.get(k)) for k in ("x", "y", "x2", "y2"))
        if name.startswith(ROI_PKG + "Line"):
            return LineString([(x, y), (x2, y2)]), plane, False
        if name.startswith(ROI_PKG + "Ellipse"):
            return ellipse_polygon(x, y, x2, y2), plane, True
        # The vertex order QuPath's own ROI-to-geometry conversion (and its GeoJSON export) gives.
        return Polygon([(x, y), (x, y2), (x2, y2), (x2, y), (x, y)]), plane, False
    if name == ROI_PKG + "GeometryROI$WKBSerializationProxy":
        wkb = roi.get("wkb")
        try:
            geometry = shapely.from_wkb(bytes(wkb.values))
        except Exception as exc:  # noqa: BLE001 - shapely raises several types
            raise ProjectError(f"{where}: its geometry (WKB) cannot be read: {exc}") from exc
        return _model_geometry(geometry, where), plane, False
    raise ProjectError(f"{where}: ROI type {name} is not supported")


def _model_geometry(geometry: BaseGeometry, where: str) -> BaseGeometry:
    if isinstance(geometry, (Polygon, MultiPolygon, Point, MultiPoint, LineString)):
        return geometry
    if isinstance(geometry, shapely.GeometryCollection):
        polys = [g for g in geometry.geoms if isinstance(g, (Polygon, MultiPolygon))]
        if len(polys) == len(geometry.geoms):
            parts: list[Polygon] = []
            for g in polys:
                parts.extend(g.geoms if isinstance(g, MultiPolygon) else [g])
            return MultiPolygon(parts)
        if geometry.is_empty:
            return Polygon()
    raise ProjectError(f"{where}: {geometry.geom_type} geometries are not supported by qpsam's object model")


def _f32(value: float) -> float:
    """``value`` as the 32-bit float QuPath keeps (its GeoJSON import reads into float coordinate sequences)."""
    return float(np.float32(value))


def _is_box(polygon: Polygon, version: tuple[int, ...]) -> bool:
    """Whether QuPath ``version``'s GeoJSON import makes a ``RectangleROI`` of this hole-free polygon.

    QuPath 0.6+ asks JTS whether the polygon is a rectangle (:func:`qpsam.objects.is_rectangle`). Before 0.6 QuPath
    converts every polygon to a Java ``Area``, which is rectangular when the polygon fills its bounding box with
    one edge on each vertical side: extra vertices along the top and bottom edges still give a rectangle there,
    extra vertices along the left and right edges do not (the ``Area`` keeps vertical edges as they are split).
    """
    if not _before_06(version):
        return is_rectangle(polygon)
    x, y, x2, y2 = polygon.bounds
    if x == x2 or y == y2:
        return False
    ring = list(polygon.exterior.coords)
    edges = list(zip(ring, ring[1:]))
    # A valid polygon with axis-parallel edges and every vertex on its bounding box is that box.
    vertical = sum(a[0] == b[0] for a, b in edges)
    return (vertical == 2 and all(a[0] == b[0] or a[1] == b[1] for a, b in edges)
            and all(px in (x, x2) or py in (y, y2) for px, py in ring) and polygon.is_valid)


def roi_class(geometry: BaseGeometry, ellipse: bool = False, version: str | tuple[int, ...] | None = None) -> str:
    """The ROI class QuPath ``version`` (default: the newest) makes of ``geometry`` on a GeoJSON import.

    ``PointsROI`` for points, ``EllipseROI`` for a polygon flagged ``ellipse``, ``LineROI`` for a line of two
    distinct points, ``PolylineROI`` for longer lines, ``RectangleROI`` for an axis-aligned rectangle (see
    :func:`_is_box`), ``PolygonROI`` for any other polygon without holes (also a one-part multipolygon), and
    ``GeometryROI`` for polygons with holes, multipolygons and empty geometries.
    """
    vt = () if version is None else version if isinstance(version, tuple) else version_tuple(version)
    geometry = _roi_geometry(geometry, vt)
    if geometry.is_empty:
        return "GeometryROI"
    # The object model's kinds, refined by what this version does with holes, rectangles and multipolygons.
    kind = roi_kind(geometry, ellipse)
    if kind in ("rectangle", "polygon") and isinstance(geometry, Polygon):
        if geometry.interiors:
            return "GeometryROI"
        return "RectangleROI" if _is_box(geometry, vt) else "PolygonROI"
    if kind == "geometry":
        return "EllipseROI" if ellipse and isinstance(geometry, MultiPolygon) else "GeometryROI"
    return _ROI_CLASSES[kind]


_ROI_CLASSES = {"points": "PointsROI", "line": "LineROI", "polyline": "PolylineROI", "ellipse": "EllipseROI"}


def _before_06(version: tuple[int, ...]) -> bool:
    return bool(version) and version < (0, 6)


def _roi_geometry(geometry: BaseGeometry, version: tuple[int, ...]) -> BaseGeometry:
    """The geometry QuPath ``version`` turns into a ROI: repeated vertices dropped (0.6+ drops them when it
    reduces the precision of what it reads; before 0.6 only polygons lose them, in their ``Area``), a multipolygon
    of one part taken as that polygon."""
    if geometry.is_empty or isinstance(geometry, (Point, MultiPoint)):
        return geometry
    if not (isinstance(geometry, LineString) and _before_06(version)):
        geometry = shapely.remove_repeated_points(geometry, 0.0)
    if isinstance(geometry, MultiPolygon) and len(geometry.geoms) == 1:
        return geometry.geoms[0]
    return geometry


def geometry_to_roi(pool: Pool, geometry: BaseGeometry, plane: ImagePlane, ellipse: bool,
                     version: tuple[int, ...] = ()) -> J.JavaObject:
    """The ROI QuPath ``version``'s GeoJSON import makes of ``geometry`` (see :func:`roi_class`), as its
    serialisation proxy. Points, polygons and polylines are kept as 32-bit floats, as QuPath keeps them."""
    c, z, t = plane.c, plane.z, plane.t
    kind = roi_class(geometry, ellipse, version)
    shape = _roi_geometry(geometry, version)

    def float_array(values: Sequence[float] | np.ndarray) -> J.JavaArray:
        return J.JavaArray(pool.desc("[F"), np.asarray(values, dtype=">f4"))

    def bounded(name: str, x: float, y: float, x2: float, y2: float) -> J.JavaObject:
        return java_object(pool.desc(ROI_PKG + name + "$SerializationProxy"), c=c, t=t, x=x, x2=x2, y=y, y2=y2, z=z,
                           name=None)

    if kind == "PointsROI":
        pts = shapely.get_coordinates(shape)  # one point or several, in order
        return java_object(pool.desc(ROI_PKG + "PointsROI$SerializationProxy"), c=c, t=t, z=z, name=None,
                           x=float_array(pts[:, 0]), y=float_array(pts[:, 1]))
    if kind == "EllipseROI":
        return bounded("EllipseROI", *shape.bounds)
    if kind == "LineROI":
        (x, y), (x2, y2) = shape.coords
        return bounded("LineROI", _f32(x), _f32(y), _f32(x2), _f32(y2))
    if kind == "PolylineROI":
        coords = list(shape.coords)
        return java_object(pool.desc(ROI_PKG + "PolylineROI$SerializationProxy"), c=c, t=t, z=z,
                           x=float_array([p[0] for p in coords]), y=float_array([p[1] for p in coords]))
    if kind == "RectangleROI":
        x, y, x2, y2 = (_f32(v) for v in shape.bounds)
        return bounded("RectangleROI", x, y, x2, y2)
    if kind == "PolygonROI":
        assert isinstance(shape, Polygon)  # roi_class says so
        coords = list(shape.exterior.coords)
        if _before_06(version):
            coords = coords[:-1]  # 0.5.1 builds its polygons from an Area, without the closing vertex
        return java_object(pool.desc(ROI_PKG + "PolygonROI$SerializationProxy"), c=c, t=t, z=z, name=None, stats=None,
                           x=float_array([p[0] for p in coords]), y=float_array([p[1] for p in coords]))
    wkb = shapely.to_wkb(geometry, byte_order=0, output_dimension=2)
    return java_object(pool.desc(ROI_PKG + "GeometryROI$WKBSerializationProxy"), c=c, t=t, z=z, stats=None,
                       wkb=J.JavaArray(pool.desc("[B"), wkb))

