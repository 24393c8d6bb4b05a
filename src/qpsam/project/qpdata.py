"""QuPath's ``data.qpdata`` (a Java-serialised ``ImageData``) mapped to and from qpsam's object model.

The file is read with :mod:`qpsam.project.javaser` into a generic stream model; this module interprets the
QuPath classes in it (``PathObjectHierarchy``, path objects, ROIs, path classes, measurement lists, metadata maps)
and builds them back. Objects that were read and are unchanged are written with their original Java parts, so an
unchanged file is written back byte for byte; new or edited objects are written the way QuPath writes them.

ROIs written for new objects are the ones the file's QuPath version makes when it imports the same GeoJSON
(:func:`roi_class`): points -> ``PointsROI``, two-point lines -> ``LineROI``, longer ones -> ``PolylineROI``, an
axis-aligned rectangle in any corner order -> ``RectangleROI``, an object flagged ``ellipse`` -> ``EllipseROI`` (its
bounds), another polygon without holes -> ``PolygonROI``, holes and multipolygons -> ``GeometryROI`` (WKB, doubles).
Like QuPath, they keep coordinates as 32-bit floats and drop repeated vertices.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from qpsam.errors import ProjectError
from qpsam.fileio import commit_all, stage
from qpsam.objects import ImagePlane, ObjectType, PathClass, PathObject, walk

from . import javaser as J

__all__ = [
    "QpData",
    "read_qpdata",
    "write_qpdata",
    "new_qpdata",
    "summarize",
    "ellipse_polygon",
    "java_to_python",
    "roi_class",
]

DATA_FILE_VERSION = 3
METADATA_KEY_ID = "Object ID"

_PKG = "qupath.lib.objects."
_ROI = "qupath.lib.roi."
_CLASS_TYPES = {
    _PKG + "PathAnnotationObject": ObjectType.ANNOTATION,
    _PKG + "PathDetectionObject": ObjectType.DETECTION,
    _PKG + "PathCellObject": ObjectType.CELL,
    _PKG + "PathTileObject": ObjectType.TILE,
    _PKG + "TMACoreObject": ObjectType.TMA_CORE,
}
_TYPE_CLASSES = {v: k for k, v in _CLASS_TYPES.items()}
_ROOT = _PKG + "PathRootObject"

# Class descriptors QuPath writes (serialVersionUID, flags, fields in Java's order, superclass). Used only for
# classes a stream does not already describe: a stream's own descriptors are always reused.
_SER = J.SC_SERIALIZABLE
_EXT = J.SC_EXTERNALIZABLE | J.SC_BLOCK_DATA
_DESCS: dict[str, tuple[int, int, tuple[tuple[str, str, str | None], ...], str | None]] = {
    "java.lang.Number": (-8742448824652078965, _SER, (), None),
    "java.lang.Integer": (1360826667806852920, _SER, (("I", "value", None),), "java.lang.Number"),
    "java.lang.Boolean": (-3665804199014368530, _SER, (("Z", "value", None),), None),
    "java.lang.Enum": (0, _SER | J.SC_ENUM, (), None),
    "java.util.ArrayList": (8683452581122892189, _SER | J.SC_WRITE_METHOD, (("I", "size", None),), None),
    "java.util.HashMap": (
        362498820763181265, _SER | J.SC_WRITE_METHOD, (("F", "loadFactor", None), ("I", "threshold", None)), None),
    "java.util.Locale": (
        9149081749638150636, _SER | J.SC_WRITE_METHOD,
        (("I", "hashcode", None), ("L", "country", "Ljava/lang/String;"), ("L", "extensions", "Ljava/lang/String;"),
         ("L", "language", "Ljava/lang/String;"), ("L", "script", "Ljava/lang/String;"),
         ("L", "variant", "Ljava/lang/String;")), None),
    "[Ljava.lang.Object;": (-8012369246846506644, _SER, (), None),
    "[F": (836686056779680834, _SER, (), None),
    "[B": (-5984413125824719648, _SER, (), None),
    "qupath.lib.images.ImageData$ImageType": (0, _SER | J.SC_ENUM, (), "java.lang.Enum"),
    "qupath.lib.plugins.workflow.Workflow": (1, _EXT, (), None),
    "qupath.lib.objects.hierarchy.PathObjectHierarchy": (
        1, _SER, (("L", "rootObject", "Lqupath/lib/objects/PathObject;"),
                  ("L", "tmaGrid", "Lqupath/lib/objects/hierarchy/TMAGrid;")), None),
    _PKG + "PathObject": (1, _EXT, (), None),
    _PKG + "PathRootObject": (1, _EXT, (), _PKG + "PathObject"),
    _PKG + "PathROIObject": (1, _EXT, (), _PKG + "PathObject"),
    _PKG + "PathAnnotationObject": (1, _EXT, (), _PKG + "PathROIObject"),
    _PKG + "PathDetectionObject": (1, _EXT, (), _PKG + "PathROIObject"),
    _PKG + "PathCellObject": (1, _EXT, (), _PKG + "PathDetectionObject"),
    _PKG + "PathTileObject": (1, _EXT, (), _PKG + "PathDetectionObject"),
    _PKG + "TMACoreObject": (1, _EXT, (), _PKG + "PathROIObject"),
    _PKG + "MetadataMap": (1, _EXT, (), None),
    "qupath.lib.objects.classes.PathClass": (
        1, _SER, (("L", "colorRGB", "Ljava/lang/Integer;"), ("L", "name", "Ljava/lang/String;"),
                  ("L", "parentClass", "Lqupath/lib/objects/classes/PathClass;")), None),
    "qupath.lib.measurements.DefaultMeasurementList": (
        1, _SER, (("L", "list", "Ljava/util/ArrayList;"),), None),
    "qupath.lib.measurements.DoubleMeasurement": (
        1, _SER, (("D", "value", None), ("L", "name", "Ljava/lang/String;")), None),
    _ROI + "PolygonROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;"),
                  ("L", "stats", "Lqupath/lib/roi/ClosedShapeStatistics;"), ("[", "x", "[F"), ("[", "y", "[F")), None),
    _ROI + "PolylineROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("I", "z", None), ("[", "x", "[F"), ("[", "y", "[F")), None),
    _ROI + "PointsROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;"),
                  ("[", "x", "[F"), ("[", "y", "[F")), None),
    _ROI + "RectangleROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("D", "x", None), ("D", "x2", None), ("D", "y", None),
                  ("D", "y2", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;")), None),
    _ROI + "EllipseROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("D", "x", None), ("D", "x2", None), ("D", "y", None),
                  ("D", "y2", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;")), None),
    _ROI + "LineROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("D", "x", None), ("D", "x2", None), ("D", "y", None),
                  ("D", "y2", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;")), None),
    _ROI + "GeometryROI$WKBSerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("I", "z", None),
                  ("L", "stats", "Lqupath/lib/roi/GeometryROI$GeometryStats;"), ("[", "wkb", "[B")), None),
}


def _version_tuple(version: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (version or "0").split("-")[0].split("."):
        try:
            parts.append(int(piece))
        except ValueError:
            break
    return tuple(parts) or (0,)


# ------------------------------------------------------------------------------------------------------------
# Shared Java instances: descriptors, cached Integers, Booleans, constant strings, path classes


class _Pool:
    """The instances a Java writer shares within one stream (one descriptor per class, ``Boolean.TRUE``,
    cached small ``Integer``s, interned strings, singleton path classes)."""

    def __init__(self) -> None:
        self.descs: dict[str, J.ClassDesc] = {}
        self.strings: dict[str, J.JavaString] = {}
        self.booleans: dict[bool, J.JavaObject] = {}
        self.integers: dict[int, J.JavaObject] = {}
        self.classes: dict[tuple[str, tuple[int, ...] | None], J.JavaObject] = {}
        self.class_colors: dict[str, tuple[int, ...]] = {}

    def harvest(self, stream: J.JavaStream) -> None:
        """Adopt the shared instances already in a stream, so that new objects refer to them as QuPath would."""
        seen: set[int] = set()
        stack: list[Any] = list(stream.contents)
        while stack:
            item = stack.pop()
            if item is None or id(item) in seen or isinstance(item, (J.BlockData, J.Reset)):
                continue
            seen.add(id(item))
            if isinstance(item, J.ClassDesc):
                self.descs.setdefault(item.name, item)
                for f in item.fields:
                    if isinstance(f.class_name, J.JavaString):
                        self.strings.setdefault(str(f.class_name), f.class_name)
                stack.extend(item.annotation)
                stack.append(item.superclass)
            elif isinstance(item, J.JavaObject):
                stack.append(item.classdesc)
                name = item.class_name
                if name == "java.lang.Boolean":
                    self.booleans.setdefault(bool(item.get("value")), item)
                elif name == "java.lang.Integer" and -128 <= item.get("value") <= 127:
                    self.integers.setdefault(item.get("value"), item)
                elif name == "qupath.lib.objects.classes.PathClass":
                    pc = _path_class_of(item)
                    if pc is not None:
                        self.classes.setdefault((pc.name, pc.color), item)
                stack.extend(item.external or [])
                for data in item.class_data:
                    stack.extend(data.values.values())
                    stack.extend(data.annotation or [])
            elif isinstance(item, J.JavaArray):
                stack.append(item.classdesc)
                if isinstance(item.values, list):
                    stack.extend(item.values)
            elif isinstance(item, (J.JavaEnum, J.JavaClass)):
                stack.append(item.classdesc)

    def desc(self, name: str) -> J.ClassDesc:
        found = self.descs.get(name)
        if found is not None:
            return found
        try:
            suid, flags, fields, superclass = _DESCS[name]
        except KeyError:
            raise ProjectError(f"no class descriptor known for {name}") from None
        desc = J.ClassDesc(
            name, suid, flags,
            [J.FieldDesc(code, fname, self.string(cname) if cname else None) for code, fname, cname in fields],
            [], self.desc(superclass) if superclass else None,
        )
        self.descs[name] = desc
        return desc

    def string(self, value: str) -> J.JavaString:
        """An interned string (Java literals and type signatures are one instance per stream)."""
        found = self.strings.get(value)
        if found is None:
            found = self.strings[value] = J.JavaString(value)
        return found

    def boolean(self, value: bool) -> J.JavaObject:
        found = self.booleans.get(bool(value))
        if found is None:
            found = self.booleans[bool(value)] = _obj(self.desc("java.lang.Boolean"), value=bool(value))
        return found

    def integer(self, value: int) -> J.JavaObject:
        if not -128 <= value <= 127:  # Integer.valueOf caches only these
            return self._new_integer(value)
        found = self.integers.get(value)
        if found is None:
            found = self.integers[value] = self._new_integer(value)
        return found

    def _new_integer(self, value: int) -> J.JavaObject:
        desc = self.desc("java.lang.Integer")
        return J.JavaObject(desc, [J.ClassData(desc.superclass, {}), J.ClassData(desc, {"value": int(value)})])

    def path_class(self, pc: PathClass) -> J.JavaObject:
        key = (pc.name, pc.color)
        found = self.classes.get(key)
        if found is not None:
            return found
        names = pc.names
        parent = None
        if len(names) > 1:
            parent_name = ": ".join(names[:-1])
            parent_color = self.class_colors.get(parent_name)
            if parent_color is None:
                same = [k for k in self.classes if k[0] == parent_name]
                parent_color = same[0][1] if same else pc.color
            parent = self.path_class(PathClass(parent_name, parent_color))
        color = None if pc.color is None else self.integer(_pack_color(pc.color))
        obj = _obj(self.desc("qupath.lib.objects.classes.PathClass"),
                   colorRGB=color, name=J.JavaString(names[-1]), parentClass=parent)
        self.classes[key] = obj
        return obj


def _obj(desc: J.ClassDesc, **values: Any) -> J.JavaObject:
    """A serializable object of a single class level (no serializable superclass data)."""
    return J.JavaObject(desc, [J.ClassData(desc, {f.name: values[f.name] for f in desc.fields},
                                           [] if desc.flags & J.SC_WRITE_METHOD else None)])


# ------------------------------------------------------------------------------------------------------------
# Plain Java values <-> Python


_BOXED = {"java.lang.Integer", "java.lang.Long", "java.lang.Short", "java.lang.Byte", "java.lang.Double",
          "java.lang.Float", "java.lang.Boolean", "java.lang.Character"}


def java_to_python(value: Any) -> Any:
    """Standard Java values as Python: boxed numbers, strings, lists, maps, UUIDs, enums (as their constant name).

    Anything else is returned unchanged (a :class:`~qpsam.project.javaser.JavaObject`)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, J.JavaEnum):
        return str(value.constant)
    if isinstance(value, J.JavaArray):
        if isinstance(value.values, (bytes, list)):
            return value.values if isinstance(value.values, bytes) else [java_to_python(v) for v in value.values]
        return value.values.astype(value.values.dtype.newbyteorder("=")).tolist()
    if not isinstance(value, J.JavaObject):
        return value
    name = value.class_name
    if name in _BOXED:
        return value.get("value")
    if name == "java.util.UUID":
        most, least = value.get("mostSigBits") & (2**64 - 1), value.get("leastSigBits") & (2**64 - 1)
        return uuid.UUID(int=(most << 64) | least)
    if name in ("java.util.ArrayList", "java.util.LinkedList", "java.util.Vector", "java.util.ArrayDeque"):
        return [java_to_python(v) for v in _list_items(value)]
    if name in ("java.util.HashMap", "java.util.LinkedHashMap", "java.util.TreeMap", "java.util.Hashtable"):
        return {java_to_python(k): java_to_python(v) for k, v in _map_items(value)}
    if name in ("java.util.Collections$UnmodifiableList", "java.util.Collections$UnmodifiableRandomAccessList",
                "java.util.Collections$UnmodifiableCollection", "java.util.Collections$UnmodifiableMap"):
        # QuPath 0.5's measurement lists keep their names in an unmodifiable view: the wrapped collection.
        return java_to_python(value.get("list") if value.get("list") is not None else
                              value.get("c") if value.get("c") is not None else value.get("m"))
    if name == "java.util.Collections$SingletonMap":
        return {java_to_python(value.get("k")): java_to_python(value.get("v"))}
    if name == "java.util.CollSer":
        items = _collser_items(value)
        if value.get("tag") & 0xFF == 3:
            return {java_to_python(items[i]): java_to_python(items[i + 1]) for i in range(0, len(items), 2)}
        return [java_to_python(v) for v in items]
    return value


def _list_items(obj: J.JavaObject) -> list[Any]:
    data = obj.class_data[-1]
    reader = J.DataReader(data.annotation or [], obj.class_name)
    reader.read_int()  # capacity
    return [reader.read_object() for _ in range(int(data.values.get("size", 0)))]


def _map_items(obj: J.JavaObject) -> list[tuple[Any, Any]]:
    for data in obj.class_data:
        if data.annotation is not None and data.desc.name in ("java.util.HashMap", "java.util.Hashtable",
                                                              "java.util.TreeMap"):
            reader = J.DataReader(data.annotation, obj.class_name)
            if data.desc.name == "java.util.TreeMap":
                n = reader.read_int()
            else:
                reader.read_int()  # buckets
                n = reader.read_int()
            return [(reader.read_object(), reader.read_object()) for _ in range(n)]
    return []


def _collser_items(obj: J.JavaObject) -> list[Any]:
    reader = J.DataReader(obj.class_data[-1].annotation or [], obj.class_name)
    n = reader.read_int()
    return [reader.read_object() for _ in range(n)]


def _java_string_hash(text: str) -> int:
    h = 0
    units = text.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(units), 2):
        h = (31 * h + ((units[i] << 8) | units[i + 1])) & 0xFFFFFFFF
    return h


def _hashmap(pool: _Pool, items: Mapping[str, Any]) -> J.JavaObject:
    """A ``java.util.HashMap`` of string keys, written in Java's iteration (bucket) order."""
    capacity, threshold = 16, 12
    while len(items) > threshold:
        capacity *= 2
        threshold = int(capacity * 0.75)

    def bucket(key: str) -> int:
        h = _java_string_hash(key)
        return (h ^ (h >> 16)) & (capacity - 1)

    ordered = sorted(items.items(), key=lambda kv: bucket(kv[0]))
    out = J.DataWriter()
    out.write_int(capacity)
    out.write_int(len(items))
    for key, value in ordered:
        out.write_object(J.JavaString(key))
        out.write_object(_python_to_java(pool, value))
    desc = pool.desc("java.util.HashMap")
    return J.JavaObject(desc, [J.ClassData(desc, {"loadFactor": 0.75, "threshold": threshold}, out.finish())])


def _python_to_java(pool: _Pool, value: Any) -> Any:
    if value is None or isinstance(value, (J.JavaObject, J.JavaArray, J.JavaEnum)):
        return value
    if isinstance(value, bool):
        return pool.boolean(value)
    if isinstance(value, int) and -(2**31) <= value < 2**31:
        return pool.integer(value)
    if isinstance(value, str):
        return J.JavaString(value)
    raise ProjectError(f"cannot store a Python {type(value).__name__} as a QuPath image property")


# ------------------------------------------------------------------------------------------------------------
# Colours, classes, measurements, metadata


def _pack_color(color: Sequence[int]) -> int:
    r, g, b = color[:3]
    a = color[3] if len(color) > 3 else 255
    packed = (a << 24) | (r << 16) | (g << 8) | b
    return packed - (1 << 32) if packed >= 1 << 31 else packed


def _unpack_color(value: int | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    packed = value & 0xFFFFFFFF
    a, r, g, b = (packed >> 24) & 255, (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    return (r, g, b) if a in (0, 255) else (r, g, b, a)


def _int_value(obj: Any) -> int | None:
    if isinstance(obj, J.JavaObject) and obj.class_name == "java.lang.Integer":
        return obj.get("value")
    return None


def _path_class_of(obj: Any) -> PathClass | None:
    if not isinstance(obj, J.JavaObject) or obj.class_name != "qupath.lib.objects.classes.PathClass":
        return None
    names: list[str] = []
    level: Any = obj
    while isinstance(level, J.JavaObject):
        name = level.get("name")
        if name is not None and str(name) != "":
            names.append(str(name))
        level = level.get("parentClass")
    if not names:
        return None
    return PathClass(": ".join(reversed(names)), _unpack_color(_int_value(obj.get("colorRGB"))))


def _measurements_of(obj: Any) -> dict[str, float]:
    if not isinstance(obj, J.JavaObject):
        return {}
    name = obj.class_name
    out: dict[str, float] = {}
    if name == "qupath.lib.measurements.DefaultMeasurementList":
        items = obj.get("list")
        for m in _list_items(items) if isinstance(items, J.JavaObject) else []:
            if isinstance(m, J.JavaObject) and m.get("name") is not None:
                value = m.get("value")
                if isinstance(value, (int, float)):
                    out[str(m.get("name"))] = float(value)
        return out
    if name.startswith("qupath.lib.measurements.NumericMeasurementList$"):
        names = java_to_python(obj.get("names")) or []
        values = obj.get("values")
        array = values.values if isinstance(values, J.JavaArray) else []
        for key, value in zip(names, array):
            out[str(key)] = float(value)
        return out
    return out


def _metadata_of(obj: Any) -> dict[str, str]:
    if not isinstance(obj, J.JavaObject) or obj.class_name != _PKG + "MetadataMap":
        return {}
    reader = J.DataReader(obj.external or [], "a MetadataMap")
    reader.read_object()  # version
    keys, values = reader.read_object(), reader.read_object()
    if not isinstance(keys, J.JavaArray) or not isinstance(values, J.JavaArray):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in zip(keys.values, values.values)}


def _metadata_map(pool: _Pool, metadata: Mapping[str, str], object_id: uuid.UUID) -> J.JavaObject:
    keys = [J.JavaString(k) for k in metadata] + [pool.string(METADATA_KEY_ID)]
    values = [J.JavaString(v) for v in metadata.values()] + [J.JavaString(str(object_id))]
    array = pool.desc("[Ljava.lang.Object;")
    out = J.DataWriter()
    out.write_object(pool.integer(1))
    out.write_object(J.JavaArray(array, keys))
    out.write_object(J.JavaArray(array, values))
    return J.JavaObject(pool.desc(_PKG + "MetadataMap"), external=out.finish())


def _measurement_list(pool: _Pool, measurements: Mapping[str, float], empty_as_list: bool) -> J.JavaObject | None:
    if not measurements and not empty_as_list:
        return None
    desc = pool.desc("qupath.lib.measurements.DoubleMeasurement")
    out = J.DataWriter()
    out.write_int(len(measurements))
    for name, value in measurements.items():
        out.write_object(_obj(desc, value=float(value), name=pool.string(name)))
    array_desc = pool.desc("java.util.ArrayList")
    array = J.JavaObject(array_desc, [J.ClassData(array_desc, {"size": len(measurements)}, out.finish())])
    return _obj(pool.desc("qupath.lib.measurements.DefaultMeasurementList"), list=array)


# ------------------------------------------------------------------------------------------------------------
# ROIs <-> geometry


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


def _roi_to_geometry(roi: Any, where: str) -> tuple[BaseGeometry, ImagePlane, bool]:
    """(geometry, plane, is_ellipse) of a ROI proxy object."""
    if not isinstance(roi, J.JavaObject):
        raise ProjectError(f"{where}: has no ROI")
    name = roi.class_name
    plane = ImagePlane(int(roi.get("c", -1)), int(roi.get("z", 0)), int(roi.get("t", 0)))
    if name in (_ROI + "PolygonROI$SerializationProxy", _ROI + "PolylineROI$SerializationProxy",
                _ROI + "PointsROI$SerializationProxy"):
        pts = list(zip(_floats(roi.get("x")), _floats(roi.get("y"))))
        if name.startswith(_ROI + "Points"):
            return (Point(pts[0]) if len(pts) == 1 else MultiPoint(pts)), plane, False
        if name.startswith(_ROI + "Polyline"):
            return LineString(pts), plane, False
        if not pts:
            return Polygon(), plane, False
        while len(pts) < 3:
            pts.append(pts[-1])
        return Polygon(pts), plane, False
    if name in (_ROI + "RectangleROI$SerializationProxy", _ROI + "EllipseROI$SerializationProxy",
                _ROI + "LineROI$SerializationProxy"):
        x, y, x2, y2 = (float(roi.get(k)) for k in ("x", "y", "x2", "y2"))
        if name.startswith(_ROI + "Line"):
            return LineString([(x, y), (x2, y2)]), plane, False
        if name.startswith(_ROI + "Ellipse"):
            return ellipse_polygon(x, y, x2, y2), plane, True
        # The vertex order QuPath's own ROI-to-geometry conversion (and its GeoJSON export) gives.
        return Polygon([(x, y), (x, y2), (x2, y2), (x2, y), (x, y)]), plane, False
    if name == _ROI + "GeometryROI$WKBSerializationProxy":
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

    QuPath 0.6+ asks JTS whether the polygon is a rectangle: one ring of four corners, each on a corner of the
    bounding box, every edge parallel to an axis, whatever the start corner and direction. Before 0.6 QuPath
    converts every polygon to a Java ``Area``, which is rectangular when the polygon fills its bounding box with
    one edge on each vertical side: extra vertices along the top and bottom edges still give a rectangle there,
    extra vertices along the left and right edges do not (the ``Area`` keeps vertical edges as they are split).
    """
    x, y, x2, y2 = polygon.bounds
    if x == x2 or y == y2:
        return False
    ring = list(polygon.exterior.coords)
    edges = list(zip(ring, ring[1:]))
    if _before_06(version):
        # A valid polygon with axis-parallel edges and every vertex on its bounding box is that box.
        vertical = sum(a[0] == b[0] for a, b in edges)
        return (vertical == 2 and all(a[0] == b[0] or a[1] == b[1] for a, b in edges)
                and all(px in (x, x2) or py in (y, y2) for px, py in ring) and polygon.is_valid)
    if len(ring) != 5 or any(px not in (x, x2) or py not in (y, y2) for px, py in ring):
        return False
    # Each edge moves along exactly one axis.
    return all((a[0] != b[0]) != (a[1] != b[1]) for a, b in edges)


def roi_class(geometry: BaseGeometry, ellipse: bool = False, version: str | tuple[int, ...] | None = None) -> str:
    """The ROI class QuPath ``version`` (default: the newest) makes of ``geometry`` on a GeoJSON import.

    ``PointsROI`` for points, ``EllipseROI`` for a polygon flagged ``ellipse``, ``LineROI`` for a line of two
    distinct points, ``PolylineROI`` for longer lines, ``RectangleROI`` for an axis-aligned rectangle (see
    :func:`_is_box`), ``PolygonROI`` for any other polygon without holes (also a one-part multipolygon), and
    ``GeometryROI`` for polygons with holes, multipolygons and empty geometries.
    """
    vt = () if version is None else version if isinstance(version, tuple) else _version_tuple(version)
    geometry = _roi_geometry(geometry, vt)
    if geometry.is_empty:
        return "GeometryROI"
    if isinstance(geometry, (Point, MultiPoint)):
        return "PointsROI"
    if isinstance(geometry, LineString):
        return "LineROI" if len(geometry.coords) == 2 else "PolylineROI"
    if isinstance(geometry, Polygon):
        if ellipse:
            return "EllipseROI"
        if geometry.interiors:
            return "GeometryROI"
        return "RectangleROI" if _is_box(geometry, vt) else "PolygonROI"
    return "EllipseROI" if ellipse and isinstance(geometry, MultiPolygon) else "GeometryROI"


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


def _geometry_to_roi(pool: _Pool, geometry: BaseGeometry, plane: ImagePlane, ellipse: bool,
                     version: tuple[int, ...] = ()) -> J.JavaObject:
    """The ROI QuPath ``version``'s GeoJSON import makes of ``geometry`` (see :func:`roi_class`), as its
    serialisation proxy. Points, polygons and polylines are kept as 32-bit floats, as QuPath keeps them."""
    c, z, t = plane.c, plane.z, plane.t
    kind = roi_class(geometry, ellipse, version)
    shape = _roi_geometry(geometry, version)

    def float_array(values: Sequence[float]) -> J.JavaArray:
        return J.JavaArray(pool.desc("[F"), np.asarray(values, dtype=">f4"))

    def bounded(name: str, x: float, y: float, x2: float, y2: float) -> J.JavaObject:
        return _obj(pool.desc(_ROI + name + "$SerializationProxy"), c=c, t=t, x=x, x2=x2, y=y, y2=y2, z=z,
                    name=None)

    if kind == "PointsROI":
        pts = [(shape.x, shape.y)] if isinstance(shape, Point) else [(p.x, p.y) for p in shape.geoms]
        return _obj(pool.desc(_ROI + "PointsROI$SerializationProxy"), c=c, t=t, z=z, name=None,
                    x=float_array([p[0] for p in pts]), y=float_array([p[1] for p in pts]))
    if kind == "EllipseROI":
        return bounded("EllipseROI", *shape.bounds)
    if kind == "LineROI":
        (x, y), (x2, y2) = shape.coords
        return bounded("LineROI", _f32(x), _f32(y), _f32(x2), _f32(y2))
    if kind == "PolylineROI":
        coords = list(shape.coords)
        return _obj(pool.desc(_ROI + "PolylineROI$SerializationProxy"), c=c, t=t, z=z,
                    x=float_array([p[0] for p in coords]), y=float_array([p[1] for p in coords]))
    if kind == "RectangleROI":
        x, y, x2, y2 = (_f32(v) for v in shape.bounds)
        return bounded("RectangleROI", x, y, x2, y2)
    if kind == "PolygonROI":
        coords = list(shape.exterior.coords)
        if _before_06(version):
            coords = coords[:-1]  # 0.5.1 builds its polygons from an Area, without the closing vertex
        return _obj(pool.desc(_ROI + "PolygonROI$SerializationProxy"), c=c, t=t, z=z, name=None, stats=None,
                    x=float_array([p[0] for p in coords]), y=float_array([p[1] for p in coords]))
    wkb = shapely.to_wkb(geometry, byte_order=0, output_dimension=2)
    return _obj(pool.desc(_ROI + "GeometryROI$WKBSerializationProxy"), c=c, t=t, z=z, stats=None,
                wkb=J.JavaArray(pool.desc("[B"), wkb))


# ------------------------------------------------------------------------------------------------------------
# Path objects


@dataclass
class _Parts:
    """What one path object wrote in its ``writeExternal``, in order: ``head`` is everything before the child
    count, ``tail`` everything after the children; each entry is (role, kind, value)."""

    java: J.JavaObject
    head: list[tuple[str, str, Any]]
    tail: list[tuple[str, str, Any]]
    model: PathObject | None = None  # the object as read, without children (None for the root)


def _decode_object(java: J.JavaObject, where: str,
                   originals: dict[uuid.UUID, _Parts]) -> tuple[_Parts, PathObject | None, list[PathObject]]:
    """Decode a path object and its descendants: (its parts, the object or None for a root, its children)."""
    chain = [d.name for d in java.classdesc.hierarchy()]
    if _PKG + "PathObject" not in chain:
        raise ProjectError(f"{where}: {java.class_name} is not a QuPath path object")
    if java.external is None:
        raise ProjectError(f"{where}: {java.class_name} has no externalized data")
    reader = J.DataReader(java.external, where)
    head: list[tuple[str, str, Any]] = []
    tail: list[tuple[str, str, Any]] = []

    def read(into: list[tuple[str, str, Any]], role: str) -> Any:
        value = reader.read_object()
        into.append((role, "obj", value))
        return value

    name = read(head, "name")
    color = read(head, "color")
    object_id: uuid.UUID | None = None
    metadata_obj = measurements_obj = None
    nxt = reader.read_object()
    if isinstance(nxt, J.JavaObject) and nxt.class_name == "java.util.UUID":
        # Data file version 4: the id, a count of fields, then the fields.
        head.append(("uuid", "obj", nxt))
        object_id = java_to_python(nxt)
        n_fields = reader.read_int()
        head.append(("nfields", "int", n_fields))
        for _ in range(n_fields):
            value = reader.read_object()
            if isinstance(value, J.JavaObject) and value.class_name == _PKG + "MetadataMap":
                metadata_obj = value
                head.append(("metadata", "obj", value))
            elif isinstance(value, J.JavaObject) and ".measurements." in value.class_name:
                measurements_obj = value
                head.append(("measurements", "obj", value))
            else:
                head.append(("extra", "obj", value))
    else:
        if isinstance(nxt, J.JavaObject) and nxt.class_name == _PKG + "MetadataMap":
            metadata_obj = nxt
            head.append(("metadata", "obj", nxt))
            nxt = reader.read_object()
        measurements_obj = nxt
        head.append(("measurements", "obj", nxt))
    n_children = reader.read_int()
    if n_children < 0:
        raise ProjectError(f"{where}: negative child count {n_children}")
    children_java = [reader.read_object() for _ in range(n_children)]
    locked = False
    path_class = None
    geometry: BaseGeometry | None = None
    nucleus = None
    plane = ImagePlane()
    ellipse = False
    is_root = _PKG + "PathROIObject" not in chain
    if not is_root:
        first = reader.read_object()
        if isinstance(first, J.JavaObject) and first.class_name == "java.lang.Boolean":
            tail.append(("locked", "obj", first))
            locked = bool(first.get("value"))
            first = reader.read_object()
        tail.append(("class", "obj", first))
        path_class = _path_class_of(first)
        roi = read(tail, "roi")
        tail.append(("prob", "double", reader.read_double()))
        if _PKG + "PathCellObject" in chain:
            nucleus_roi = read(tail, "nucleus")
            if nucleus_roi is not None:
                nucleus = _roi_to_geometry(nucleus_roi, where + " (nucleus)")[0]
        if _PKG + "TMACoreObject" in chain:
            tail.append(("missing", "bool", reader.read_boolean()))
        if roi is None:
            geometry = Polygon()
        else:
            geometry, plane, ellipse = _roi_to_geometry(roi, where)
    while not reader.at_end():
        tail.append(("raw", "obj", reader.read_object()))
    parts = _Parts(java, head, tail)

    children: list[PathObject] = []
    for k, child in enumerate(children_java):
        if not isinstance(child, J.JavaObject):
            raise ProjectError(f"{where}: child {k} is not a path object ({child!r})")
        _, decoded, _ = _decode_object(child, f"{where} > child {k}", originals)
        if decoded is None:
            raise ProjectError(f"{where}: child {k} is a root object")
        children.append(decoded)
    if is_root:
        return parts, None, children

    metadata = _metadata_of(metadata_obj)
    raw_id = metadata.pop(METADATA_KEY_ID, None)
    if object_id is None and raw_id is not None:
        try:
            object_id = uuid.UUID(raw_id)
        except ValueError:
            metadata[METADATA_KEY_ID] = raw_id  # QuPath keeps an id it cannot parse as metadata
    if object_id is None:
        object_id = uuid.uuid4()  # QuPath gives id-less (pre-0.4) objects a random id on reading too
    if object_id in originals:
        raise ProjectError(f"{where}: object id {object_id} appears twice in the file")
    try:
        model = PathObject(
            geometry=geometry, object_type=_object_type(chain, where), path_class=path_class,
            name=None if not isinstance(name, str) else str(name), color=_unpack_color(_int_value(color)),
            locked=locked, measurements=_measurements_of(measurements_obj), plane=plane, id=object_id,
            nucleus=nucleus, ellipse=ellipse, metadata=metadata,
        )
    except (TypeError, ValueError) as exc:
        raise ProjectError(f"{where}: {exc}") from exc
    parts.model = model
    originals[object_id] = parts
    return parts, (model.replace(children=tuple(children)) if children else model), children


def _object_type(chain: list[str], where: str) -> ObjectType:
    for name in reversed(chain):
        if name in _CLASS_TYPES:
            return _CLASS_TYPES[name]
    raise ProjectError(f"{where}: {chain[-1]} is not an annotation, detection, cell, tile or TMA core")


def _same_geometry(a: BaseGeometry | None, b: BaseGeometry | None) -> bool:
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and a.equals_exact(b, 0.0)


class _Encoder:
    def __init__(self, pool: _Pool, originals: Mapping[uuid.UUID, _Parts], version: tuple[int, ...]) -> None:
        self.pool = pool
        self.originals = originals
        self.version = version
        self.used: set[uuid.UUID] = set()

    def encode(self, obj: PathObject, where: str) -> J.JavaObject:
        if obj.id in self.used:
            raise ProjectError(f"{where}: object id {obj.id} appears twice in the hierarchy")
        self.used.add(obj.id)
        original = self.originals.get(obj.id)
        old = original.model if original is not None else None
        if old is None or old.object_type is not obj.object_type:
            original = old = None  # a new object, or a change of type: a new Java object
        pool = self.pool
        children = [self.encode(child, f"{where} > child {k}") for k, child in enumerate(obj.children)]

        if original is not None:
            head = list(original.head)
            tail = list(original.tail)
            java = original.java
        else:
            java = J.JavaObject(pool.desc(_TYPE_CLASSES[obj.object_type]), external=[])
            head = [("name", "obj", None), ("color", "obj", None), ("metadata", "obj", None),
                    ("measurements", "obj", None)]
            tail = [("locked", "obj", None), ("class", "obj", None), ("roi", "obj", None),
                    ("prob", "double", math.nan)]
            if obj.object_type is ObjectType.CELL:
                tail.append(("nucleus", "obj", None))
            if obj.object_type is ObjectType.TMA_CORE:
                tail.append(("missing", "bool", False))

        def changed(attr: str) -> bool:
            return old is None or getattr(old, attr) != getattr(obj, attr)

        def put(entries: list[tuple[str, str, Any]], role: str, value: Any) -> None:
            for i, (r, kind, _) in enumerate(entries):
                if r == role:
                    entries[i] = (r, kind, value)
                    return
            raise ProjectError(f"{where}: cannot store {role} in a {java.class_name}")

        if changed("name"):
            put(head, "name", None if obj.name is None else J.JavaString(obj.name))
        if changed("color"):
            put(head, "color", None if obj.color is None else pool.integer(_pack_color(obj.color)))
        if old is None or old.id != obj.id or dict(old.metadata) != dict(obj.metadata):
            roles = [r for r, _, _ in head]
            if "uuid" in roles:  # data file version 4: rewrite this object in version 3's layout
                head = [("name", "obj", head[0][2]), ("color", "obj", head[1][2]), ("metadata", "obj", None),
                        ("measurements", "obj", next((v for r, _, v in head if r == "measurements"), None))]
            elif "metadata" not in roles:
                head.insert(roles.index("measurements"), ("metadata", "obj", None))
            put(head, "metadata", _metadata_map(pool, obj.metadata, obj.id))
        if old is None or not _same_measurements(old.measurements, obj.measurements):
            put(head, "measurements", _measurement_list(pool, obj.measurements, self.version >= (0, 6)))
        if changed("locked"):
            roles = [r for r, _, _ in tail]
            if "locked" not in roles:
                tail.insert(0, ("locked", "obj", None))
            put(tail, "locked", pool.boolean(obj.locked))
        if changed("path_class"):
            put(tail, "class", None if obj.path_class is None else pool.path_class(obj.path_class))
        if old is None or not _same_geometry(old.geometry, obj.geometry) or old.plane != obj.plane \
                or old.ellipse != obj.ellipse:
            put(tail, "roi", _geometry_to_roi(pool, obj.geometry, obj.plane, obj.ellipse, self.version))
        if obj.object_type is ObjectType.CELL and (old is None or not _same_geometry(old.nucleus, obj.nucleus)
                                                   or old.plane != obj.plane):
            put(tail, "nucleus", None if obj.nucleus is None else _geometry_to_roi(pool, obj.nucleus, obj.plane,
                                                                                     False, self.version))
        java.external = _write_parts(head, children, tail)
        return java


def _same_measurements(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    if list(a) != list(b):
        return False
    return all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def _write_parts(head: Sequence[tuple[str, str, Any]], children: Sequence[J.JavaObject],
                 tail: Sequence[tuple[str, str, Any]]) -> list[Any]:
    out = J.DataWriter()

    def emit(entries: Sequence[tuple[str, str, Any]]) -> None:
        for _role, kind, value in entries:
            if kind == "obj":
                out.write_object(value)
            elif kind == "int":
                out.write_int(value)
            elif kind == "double":
                out.write_double(value)
            elif kind == "bool":
                out.write_boolean(value)
            else:  # pragma: no cover - roles are built in this module
                raise ProjectError(f"unknown part kind {kind!r}")

    emit(head)
    out.write_int(len(children))
    for child in children:
        out.write_object(child)
    emit(tail)
    return out.finish()


# ------------------------------------------------------------------------------------------------------------
# The file


@dataclass
class QpData:
    """The contents of one ``data.qpdata``: objects (root's children, with their children), image type,
    properties, the stored server builder, and the QuPath version that wrote it.

    Change :attr:`objects`, :attr:`image_type` or :attr:`properties` and call :meth:`to_bytes` (or
    :func:`write_qpdata`). Objects that are unchanged keep their original Java encoding.
    """

    objects: list[PathObject]
    image_type: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] | None = None
    qupath_version: str | None = None
    data_version: int = DATA_FILE_VERSION
    path: Path | None = None
    root_id: uuid.UUID = field(default_factory=uuid.uuid4)
    _stream: J.JavaStream | None = field(default=None, repr=False)
    _originals: dict[uuid.UUID, _Parts] = field(default_factory=dict, repr=False)
    _root: _Parts | None = field(default=None, repr=False)
    _properties_read: dict[str, Any] | None = field(default=None, repr=False)
    _image_type_read: str | None = field(default=None, repr=False)

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return _version_tuple(self.qupath_version)

    def all_objects(self) -> list[PathObject]:
        """Every object, depth first."""
        return list(walk(self.objects))

    def to_bytes(self, class_colors: Mapping[str, tuple[int, ...]] | None = None) -> bytes:
        """Serialise as QuPath does (unchanged objects byte for byte as they were read)."""
        stream = self._stream if self._stream is not None else _new_stream(self)
        pool = _Pool()
        pool.harvest(stream)
        # A derived class ("Tumor: Positive") stores its parent: give the parent the colour its own objects use,
        # since QuPath keeps the first colour it reads for a class name.
        for obj in walk(self.objects):
            if obj.path_class is not None and obj.path_class.color is not None:
                pool.class_colors.setdefault(obj.path_class.name, obj.path_class.color)
        if class_colors:
            pool.class_colors.update(class_colors)
        contents = list(stream.contents)
        hierarchy_index = _find(contents, "qupath.lib.objects.hierarchy.PathObjectHierarchy", self.path)
        hierarchy = contents[hierarchy_index]
        encoder = _Encoder(pool, self._originals, self.version_tuple)
        children = [encoder.encode(obj, f"object {k} ({obj.id})") for k, obj in enumerate(self.objects)]
        root = self._root
        if root is None:
            root = _Parts(J.JavaObject(pool.desc(_ROOT), external=[]),
                          [("name", "obj", None), ("color", "obj", None),
                           ("metadata", "obj", _metadata_map(pool, {}, self.root_id)),
                           ("measurements", "obj", _measurement_list(pool, {}, self.version_tuple >= (0, 6)))],
                          [])
        root.java.external = _write_parts(root.head, children, root.tail)
        if hierarchy.get("rootObject") is not root.java:
            hierarchy.set("rootObject", root.java)
        _update_tma_grid(hierarchy, encoder.used, self._originals)
        # Image type and properties: rebuilt only when changed, so that unchanged files stay byte-identical.
        if self.image_type != self._image_type_read:
            index = _find_enum(contents, "qupath.lib.images.ImageData$ImageType")
            value = None if self.image_type is None else J.JavaEnum(
                pool.desc("qupath.lib.images.ImageData$ImageType"), J.JavaString(self.image_type))
            if index is None:
                contents.insert(hierarchy_index, value)
                hierarchy_index += 1
            else:
                contents[index] = value
        if self._properties_read is None or _plain(self.properties) != _plain(self._properties_read):
            index = _find(contents, "java.util.HashMap", None, after=hierarchy_index, required=False)
            new_map = _hashmap(pool, self.properties)
            if index is None:
                contents.insert(hierarchy_index + 1, new_map)
            else:
                contents[index] = new_map
        return J.dumps(J.JavaStream(contents, stream.version))


def _plain(value: Any) -> Any:
    return java_to_python(value) if not isinstance(value, dict) else {k: _plain(v) for k, v in value.items()}


def _find(contents: list[Any], class_name: str, path: Path | None, after: int = -1,
          required: bool = True) -> int | None:
    for i, item in enumerate(contents):
        if i > after and isinstance(item, J.JavaObject) and item.class_name == class_name:
            return i
    if required:
        raise ProjectError(f"{path or 'data file'}: no {class_name.rsplit('.', 1)[-1]} in the file")
    return None


def _find_enum(contents: list[Any], class_name: str) -> int | None:
    for i, item in enumerate(contents):
        if isinstance(item, J.JavaEnum) and item.classdesc.name == class_name:
            return i
    return None


def _update_tma_grid(hierarchy: J.JavaObject, kept: set[uuid.UUID], originals: Mapping[uuid.UUID, _Parts]) -> None:
    grid = hierarchy.get("tmaGrid")
    if not isinstance(grid, J.JavaObject):
        return
    removed = {id(p.java) for oid, p in originals.items() if oid not in kept}
    for data in grid.class_data:
        for value in data.values.values():
            if isinstance(value, J.JavaObject) and value.class_name == "java.util.ArrayList":
                items = _list_items(value)
                if any(id(i) in removed for i in items):
                    # QuPath cannot keep a grid whose cores are gone; drop the grid, as deleting cores there does.
                    hierarchy.set("tmaGrid", None)
                    return


def _loads(data: bytes, where: str) -> J.JavaStream:
    try:
        return J.loads(data)
    except J.JavaSerError as exc:
        raise ProjectError(f"{where}: not a readable QuPath data file ({exc})") from exc
    except RecursionError:
        raise ProjectError(f"{where}: objects nested too deeply to read") from None


def parse_qpdata(data: bytes, where: str = "data.qpdata") -> QpData:
    """Decode the bytes of a ``data.qpdata`` file; a damaged file raises :class:`ProjectError` naming ``where``."""
    try:
        return _parse_qpdata(data, where)
    except ProjectError:
        raise
    except J.JavaSerError as exc:
        raise ProjectError(f"{where}: not a readable QuPath data file ({exc})") from exc
    except RecursionError:
        raise ProjectError(f"{where}: objects nested too deeply to read") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file parses into values no object can hold
        raise ProjectError(f"{where}: damaged data ({type(exc).__name__}: {exc})") from exc


def _parse_qpdata(data: bytes, where: str) -> QpData:
    stream = _loads(data, where)
    contents = stream.contents
    if not contents or not isinstance(contents[0], J.BlockData):
        raise ProjectError(f"{where}: not a QuPath data file (no 'Data file version' header)")
    try:
        header = J.DataReader([contents[0]], where).read_utf()
    except J.JavaSerError as exc:
        raise ProjectError(f"{where}: not a QuPath data file ({exc})") from exc
    if not header.startswith("Data file version"):
        raise ProjectError(f"{where}: not a QuPath data file (header {header[:40]!r})")
    if not contents or contents[-1] != "EOF":
        raise ProjectError(f"{where}: the file is truncated (it does not end with QuPath's EOF marker)")
    try:
        data_version = int(header.rsplit(" ", 1)[-1])
    except ValueError:
        data_version = DATA_FILE_VERSION
    server = None
    qupath_version = None
    image_type = None
    properties: dict[str, Any] = {}
    hierarchy = None
    for item in contents[1:]:
        if isinstance(item, str) and server is None and item.startswith("{"):
            try:
                info = json.loads(item)
            except ValueError:
                continue
            server = info.get("server")
            qupath_version = info.get("qupathVersion")
        elif isinstance(item, J.JavaEnum) and item.classdesc.name == "qupath.lib.images.ImageData$ImageType":
            image_type = str(item.constant)
        elif isinstance(item, J.JavaObject) and item.class_name == "qupath.lib.objects.hierarchy.PathObjectHierarchy":
            hierarchy = item
        elif isinstance(item, J.JavaObject) and item.class_name in ("java.util.HashMap", "java.util.LinkedHashMap") \
                and hierarchy is not None:
            properties = {str(k): v for k, v in java_to_python(item).items()}
    if hierarchy is None:
        raise ProjectError(f"{where}: no object hierarchy in the file")
    root_java = hierarchy.get("rootObject")
    originals: dict[uuid.UUID, _Parts] = {}
    if not isinstance(root_java, J.JavaObject):
        raise ProjectError(f"{where}: the hierarchy has no root object")
    try:
        root, root_model, objects = _decode_object(root_java, f"{where}: root", originals)
    except ProjectError:
        raise
    except J.JavaSerError as exc:
        raise ProjectError(f"{where}: {exc}") from exc
    except RecursionError:
        raise ProjectError(f"{where}: objects nested too deeply to read") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file parses into values no object can hold
        raise ProjectError(f"{where}: damaged object data ({type(exc).__name__}: {exc})") from exc
    if root_model is not None:
        raise ProjectError(f"{where}: the hierarchy's root is not a root object ({root_java.class_name})")
    root_metadata = _metadata_of(next((v for r, _, v in root.head if r == "metadata"), None))
    try:
        root_id = uuid.UUID(root_metadata.get(METADATA_KEY_ID, ""))
    except ValueError:
        root_id = uuid.uuid4()
    return QpData(
        objects=objects, image_type=image_type, properties=dict(properties), server=server,
        qupath_version=qupath_version, data_version=data_version, root_id=root_id, _stream=stream,
        _originals=originals, _root=root, _properties_read=dict(properties), _image_type_read=image_type,
    )


def read_qpdata(path: str | os.PathLike[str]) -> QpData:
    """Read a ``data.qpdata`` file. Truncated or corrupt files raise :class:`ProjectError` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProjectError(f"{path}: no such data file") from None
    except OSError as exc:
        raise ProjectError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    result = parse_qpdata(data, str(path))
    result.path = path
    return result


def new_qpdata(server: Mapping[str, Any] | None, image_type: str | None, qupath_version: str,
               entry_ref: str | None = None) -> QpData:
    """An empty ``data.qpdata`` for a new image entry (``entry_ref`` is QuPath's ``PROJECT_ENTRY_ID``)."""
    properties: dict[str, Any] = {}
    if entry_ref:
        properties["PROJECT_ENTRY_ID"] = entry_ref
    return QpData(objects=[], image_type=image_type, properties=properties,
                  server=None if server is None else dict(server), qupath_version=qupath_version)


def _new_stream(data: QpData) -> J.JavaStream:
    """The stream skeleton QuPath writes for a fresh ImageData (header, locale, type, history, hierarchy)."""
    pool = _Pool()
    out = J.DataWriter()
    out.write_utf(f"Data file version {DATA_FILE_VERSION}")
    header = {"dataVersion": DATA_FILE_VERSION, "qupathVersion": data.qupath_version}
    if data.server is not None:
        header["server"] = data.server
    out.write_object(J.JavaString(json.dumps(header, separators=(",", ":"), ensure_ascii=False)))
    empty = J.JavaString("")
    out.write_object(_obj(pool.desc("java.util.Locale"), hashcode=-1, country=J.JavaString("US"),
                          extensions=empty, language=J.JavaString("en"), script=empty, variant=empty))
    out.write_object(None if data.image_type is None else J.JavaEnum(
        pool.desc("qupath.lib.images.ImageData$ImageType"), J.JavaString(data.image_type)))
    out.write_object(None)  # colour deconvolution stains
    workflow = J.DataWriter()
    workflow.write_int(1)
    workflow.write_int(0)
    out.write_object(J.JavaObject(pool.desc("qupath.lib.plugins.workflow.Workflow"), external=workflow.finish()))
    out.write_object(_obj(pool.desc("qupath.lib.objects.hierarchy.PathObjectHierarchy"), rootObject=None,
                          tmaGrid=None))
    out.write_object(_hashmap(pool, data.properties))
    out.write_object(J.JavaString("EOF"))
    data._image_type_read = data.image_type
    data._properties_read = dict(data.properties)
    return J.JavaStream(out.finish())


# ------------------------------------------------------------------------------------------------------------
# summary.json


_SUMMARY_NAMES = {
    ObjectType.ANNOTATION: "Annotations",
    ObjectType.DETECTION: "Detections",
    ObjectType.CELL: "Cells",
    ObjectType.TILE: "Tiles",
    ObjectType.TMA_CORE: "TMA cores",
}


def summarize(objects: Iterable[PathObject]) -> dict[str, Any]:
    """The ``hierarchy`` block of QuPath's ``summary.json``: object counts by type and by class."""
    type_counts: dict[str, int] = {"Root objects": 1}
    annotations: dict[str, int] = {}
    detections: dict[str, int] = {}
    n = 1
    for obj in walk(objects):
        n += 1
        key = _SUMMARY_NAMES[obj.object_type]
        type_counts[key] = type_counts.get(key, 0) + 1
        name = obj.class_name or "Unclassified"
        if obj.object_type is ObjectType.ANNOTATION:
            annotations[name] = annotations.get(name, 0) + 1
        elif obj.object_type.is_detection:
            detections[name] = detections.get(name, 0) + 1
    return {"nObjects": n, "objectTypeCounts": type_counts, "annotationClassificationCounts": annotations,
            "detectionClassificationCounts": detections}


# ------------------------------------------------------------------------------------------------------------
# Writing a file safely


def _same_tree(expected: Sequence[PathObject], actual: Sequence[PathObject], tolerance: float) -> str | None:
    """Why ``actual`` differs from ``expected`` beyond what the file format changes (None when it does not)."""
    if len(expected) != len(actual):
        return f"{len(expected)} objects expected, {len(actual)} read back"
    for a, b in zip(expected, actual):
        if a.id != b.id or a.object_type != b.object_type:
            return f"object {a.id} came back as {b.object_type.value} {b.id}"
        for attr in ("path_class", "name", "color", "locked", "plane", "ellipse"):
            if getattr(a, attr) != getattr(b, attr):
                return f"object {a.id}: {attr} {getattr(a, attr)!r} came back as {getattr(b, attr)!r}"
        if dict(a.metadata) != dict(b.metadata) or not _same_measurements(a.measurements, b.measurements):
            return f"object {a.id}: metadata or measurements changed"
        if not a.ellipse and not _near(a.geometry, b.geometry, tolerance):
            return f"object {a.id}: geometry changed"
        if (a.nucleus is None) != (b.nucleus is None) or (a.nucleus is not None
                                                          and not _near(a.nucleus, b.nucleus, tolerance)):
            return f"object {a.id}: nucleus changed"
        why = _same_tree(a.children, b.children, tolerance)
        if why:
            return why
    return None


def _one_point(geometry: BaseGeometry) -> BaseGeometry:
    # a PointsROI holding one point reads back as a Point, as QuPath reads it
    if isinstance(geometry, MultiPoint) and len(geometry.geoms) == 1:
        return geometry.geoms[0]
    return geometry


def _near(a: BaseGeometry, b: BaseGeometry, tolerance: float) -> bool:
    if a.is_empty or b.is_empty:
        return a.is_empty and b.is_empty
    a, b = (g.geoms[0] if isinstance(g, MultiPolygon) and len(g.geoms) == 1 else g for g in (a, b))
    a, b = _one_point(a), _one_point(b)
    if a.geom_type != b.geom_type:
        return False
    ca, cb = shapely.get_coordinates(a), shapely.get_coordinates(b)
    # QuPath keeps ROI coordinates as 32-bit floats: far from the origin they move by more than ``tolerance``.
    tolerance += float(np.abs(ca).max(initial=0.0)) * 2.0 ** -23
    if ca.shape == cb.shape and np.allclose(ca, cb, rtol=0, atol=tolerance):
        return True
    if a.equals_exact(b, tolerance) or a.normalize().equals_exact(b.normalize(), tolerance):
        return True
    # The same shape with other vertices (a rectangle ROI for a polygon with extra vertices along its edges).
    return bool(shapely.hausdorff_distance(a, b) <= tolerance)


def write_qpdata(path: str | os.PathLike[str], data: QpData, *, summary: Mapping[str, Any] | None = None,
                 class_colors: Mapping[str, tuple[int, ...]] | None = None, backup: bool = True) -> QpData:
    """Write ``data`` to ``path`` safely and return what the file now holds (read back from disk).

    The bytes are built and checked in memory first; the previous file is kept as ``data.qpdata.backup``; the new
    file is written to a temporary file and renamed; it is read back and compared; ``summary.json`` next to it
    is updated (``summary`` gives its ``server`` block). Any failure leaves the previous file in place.
    """
    path = Path(path)
    where = str(path)
    try:
        payload = data.to_bytes(class_colors)
    except ProjectError:
        raise
    except J.JavaSerError as exc:
        raise ProjectError(f"{where}: cannot serialise the objects ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - parts kept from a damaged file that cannot be written back
        raise ProjectError(f"{where}: cannot serialise the objects, the file read may be damaged "
                           f"({type(exc).__name__}: {exc})") from exc
    written = parse_qpdata(payload, where + " (new contents)")
    why = _same_tree(data.objects, written.objects, 1e-3)
    if why:
        raise ProjectError(f"{where}: refusing to write, the new contents do not read back the same ({why})")
    if not path.parent.is_dir():
        raise ProjectError(f"{where}: folder {path.parent} does not exist")
    # Both files are complete on disk before either is replaced, and the backup is replaced only then, so a full
    # disk keeps the data, its backup and its summary as they were; the summary follows the data at once.
    files = [stage(path, payload, backup=backup)]
    if summary is not None:
        try:
            files.append(stage(path.with_name("summary.json"), summary_json(written, summary)))
        except BaseException:
            files[0].discard()
            raise
    commit_all(files)
    back = written
    back.path = path
    return back


def summary_json(data: QpData, server: Mapping[str, Any]) -> bytes:
    """QuPath's ``summary.json`` for ``data`` (``server`` gives its ``server`` block)."""
    content = {
        "timestamp": int(time.time() * 1000),
        "imageType": data.image_type,
        "server": dict(server),
        "hierarchy": summarize(data.objects),
    }
    return json.dumps(content, separators=(",", ":")).encode("utf-8")

