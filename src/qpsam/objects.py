"""The QuPath object model: one representation of annotations, detections, cells and tiles.

Every other part of qpsam (GeoJSON, ``.qpdata``, paquo, jobs, the server) converts to and from
:class:`PathObject`. Geometry is shapely in full-resolution image pixel coordinates, where integer
coordinates are pixel *corners* (QuPath's convention): the pixel at column 0, row 0 covers the unit
square ``[0, 1] x [0, 1]``.
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping

from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

__all__ = [
    "ObjectType",
    "PathClass",
    "ImagePlane",
    "PathObject",
    "DEFAULT_PLANE",
    "is_rectangle",
    "roi_kind",
    "same_measurements",
    "walk",
]


class ObjectType(str, enum.Enum):
    """QuPath's object types, spelt as QuPath's GeoJSON ``objectType`` spells them."""

    ANNOTATION = "annotation"
    DETECTION = "detection"
    CELL = "cell"
    TILE = "tile"
    TMA_CORE = "tmaCore"

    @property
    def is_detection(self) -> bool:
        """Detections, cells and tiles are all detection objects in QuPath."""
        return self in (ObjectType.DETECTION, ObjectType.CELL, ObjectType.TILE)


Color = tuple[int, int, int]


def _check_color(color: tuple[int, ...] | None, what: str) -> None:
    if color is None:
        return
    if len(color) not in (3, 4) or not all(isinstance(v, int) and 0 <= v <= 255 for v in color):
        raise ValueError(f"{what} must be 3 or 4 integers in 0..255, got {color!r}")


@dataclass(frozen=True)
class PathClass:
    """A classification: its name (``"Tumor"``, derived ``"Tumor: Positive"``) and colour (RGB)."""

    name: str
    color: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"class name must be a non-empty string, got {self.name!r}")
        _check_color(self.color, f"colour of class {self.name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The parts of a derived class, e.g. ``("Tumor", "Positive")``."""
        return tuple(part.strip() for part in self.name.split(":"))

    @property
    def is_ignored(self) -> bool:
        """QuPath's "ignored" classes (``Ignore*``) end with ``*``: background prompts."""
        return self.name.endswith("*")

    @classmethod
    def from_names(cls, names: Iterable[str], color: tuple[int, ...] | None = None) -> "PathClass":
        return cls(": ".join(names), color)


@dataclass(frozen=True)
class ImagePlane:
    """A plane of the image: channel (``-1`` = all channels), z-slice and time point."""

    c: int = -1
    z: int = 0
    t: int = 0

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_PLANE

    def same_slice(self, other: "ImagePlane") -> bool:
        """True when both planes show the same z-slice and time point (channels aside)."""
        return self.z == other.z and self.t == other.t


DEFAULT_PLANE = ImagePlane()

_GEOMETRY_TYPES = (Polygon, MultiPolygon, Point, MultiPoint, LineString)


@dataclass(frozen=True, eq=True)
class PathObject:
    """One QuPath object. Values are immutable; use :meth:`replace` to change a field.

    ``nucleus`` is only set for cells; ``ellipse`` records that the polygon approximates an
    ellipse ROI (QuPath writes ``isEllipse`` and rebuilds the ellipse on import).
    """

    geometry: BaseGeometry
    object_type: ObjectType = ObjectType.ANNOTATION
    path_class: PathClass | None = None
    name: str | None = None
    color: tuple[int, ...] | None = None
    locked: bool = False
    measurements: Mapping[str, float] = field(default_factory=dict)
    plane: ImagePlane = DEFAULT_PLANE
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    children: tuple["PathObject", ...] = ()
    nucleus: BaseGeometry | None = None
    ellipse: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, _GEOMETRY_TYPES):
            raise TypeError(
                "geometry must be a shapely Polygon, MultiPolygon, Point, MultiPoint or LineString, "
                f"got {type(self.geometry).__name__}"
            )
        if not isinstance(self.object_type, ObjectType):
            object.__setattr__(self, "object_type", ObjectType(self.object_type))
        if isinstance(self.path_class, str):
            object.__setattr__(self, "path_class", PathClass(self.path_class))
        if isinstance(self.id, str):
            object.__setattr__(self, "id", uuid.UUID(self.id))
        _check_color(self.color, "object colour")
        if self.nucleus is not None:
            if self.object_type is not ObjectType.CELL:
                raise ValueError(f"only cells have a nucleus geometry, not {self.object_type.value}s")
            if not isinstance(self.nucleus, (Polygon, MultiPolygon)):
                raise TypeError(f"nucleus geometry must be polygonal, got {type(self.nucleus).__name__}")
        values = {}
        for key, value in dict(self.measurements).items():
            if not isinstance(key, str):
                raise TypeError(f"measurement names must be strings, got {key!r}")
            values[key] = float(value)
        object.__setattr__(self, "measurements", MappingProxyType(values))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        object.__setattr__(self, "children", tuple(self.children))

    # Equality compares measurements by value, treating NaN as equal to NaN (QuPath uses NaN for
    # "not measured", and a round trip must compare equal).
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PathObject):
            return NotImplemented
        return (
            self.id == other.id
            and self.object_type == other.object_type
            and self.path_class == other.path_class
            and self.name == other.name
            and self.color == other.color
            and self.locked == other.locked
            and self.plane == other.plane
            and self.ellipse == other.ellipse
            and dict(self.metadata) == dict(other.metadata)
            and same_measurements(self.measurements, other.measurements)
            and self.geometry.equals_exact(other.geometry, 0.0)
            and _same_optional_geometry(self.nucleus, other.nucleus)
            and self.children == other.children
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def class_name(self) -> str | None:
        return self.path_class.name if self.path_class else None

    @property
    def roi_kind(self) -> str:
        """The QuPath ROI this geometry becomes: rectangle, ellipse, polygon, points, line, polyline."""
        return roi_kind(self.geometry, ellipse=self.ellipse)

    def replace(self, **changes: object) -> "PathObject":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def same_measurements(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Whether two measurement lists hold the same names in the same order with the same values (NaN equals NaN)."""
    if list(a) != list(b):
        return False
    for key, value in a.items():
        other = b[key]
        if not (value == other or (math.isnan(value) and math.isnan(other))):
            return False
    return True


def _same_optional_geometry(a: BaseGeometry | None, b: BaseGeometry | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.equals_exact(b, 0.0)


def roi_kind(geometry: BaseGeometry, ellipse: bool = False) -> str:
    """Name the QuPath ROI type a geometry maps to, as QuPath does on import.

    QuPath turns an axis-aligned rectangular polygon (:func:`is_rectangle`) into a RectangleROI, and a polygon
    flagged ``isEllipse`` into an EllipseROI.
    """
    if isinstance(geometry, Point):
        return "points"
    if isinstance(geometry, MultiPoint):
        return "points"
    if isinstance(geometry, LineString):
        return "line" if len(geometry.coords) == 2 else "polyline"
    if isinstance(geometry, Polygon):
        if ellipse:
            return "ellipse"
        if is_rectangle(geometry):
            return "rectangle"
        return "polygon"
    return "geometry"


def is_rectangle(polygon: Polygon) -> bool:
    """Whether QuPath takes ``polygon`` for an axis-aligned rectangle (JTS ``Polygon.isRectangle``).

    No holes, one ring of four corners, each on a corner of the bounding box, every edge parallel to an axis,
    whatever the start corner and direction; a bounding box of no area is no rectangle.
    """
    if polygon.is_empty or polygon.interiors:
        return False
    x, y, x2, y2 = polygon.bounds
    if x == x2 or y == y2:
        return False
    ring = list(polygon.exterior.coords)
    if len(ring) != 5 or any(px not in (x, x2) or py not in (y, y2) for px, py in ring):
        return False
    # Each edge moves along exactly one axis (a ring that crosses itself moves along both).
    return all((a[0] != b[0]) != (a[1] != b[1]) for a, b in zip(ring, ring[1:]))


def walk(objects: Iterable[PathObject]) -> Iterator[PathObject]:
    """Every object and, depth first, all of its descendants."""
    for obj in objects:
        yield obj
        yield from walk(obj.children)
