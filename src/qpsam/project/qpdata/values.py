"""Plain Java values of a ``data.qpdata`` and the instances a stream shares.

The class descriptors QuPath writes, the :class:`Pool` of instances one stream shares (descriptors, cached
``Integer``s, ``Boolean``s, interned strings, path classes), standard Java values as Python (:func:`java_to_python`)
and back, and the small QuPath values every path object carries: its class, colour, measurement list and metadata.
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping

from qpsam.colors import Color, pack_argb, unpack_argb
from qpsam.errors import ProjectError
from qpsam.objects import PathClass

from .. import javaser as J

__all__ = [
    "METADATA_KEY_ID", "OBJECTS_PKG", "ROI_PKG", "Pool", "hashmap", "int_value", "java_object", "java_to_python",
    "list_items", "measurement_list", "measurements_of", "metadata_map", "metadata_of", "path_class_of",
    "unpack_color", "version_tuple",
]

METADATA_KEY_ID = "Object ID"

OBJECTS_PKG = "qupath.lib.objects."
ROI_PKG = "qupath.lib.roi."

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
    OBJECTS_PKG + "PathObject": (1, _EXT, (), None),
    OBJECTS_PKG + "PathRootObject": (1, _EXT, (), OBJECTS_PKG + "PathObject"),
    OBJECTS_PKG + "PathROIObject": (1, _EXT, (), OBJECTS_PKG + "PathObject"),
    OBJECTS_PKG + "PathAnnotationObject": (1, _EXT, (), OBJECTS_PKG + "PathROIObject"),
    OBJECTS_PKG + "PathDetectionObject": (1, _EXT, (), OBJECTS_PKG + "PathROIObject"),
    OBJECTS_PKG + "PathCellObject": (1, _EXT, (), OBJECTS_PKG + "PathDetectionObject"),
    OBJECTS_PKG + "PathTileObject": (1, _EXT, (), OBJECTS_PKG + "PathDetectionObject"),
    OBJECTS_PKG + "TMACoreObject": (1, _EXT, (), OBJECTS_PKG + "PathROIObject"),
    OBJECTS_PKG + "MetadataMap": (1, _EXT, (), None),
    "qupath.lib.objects.classes.PathClass": (
        1, _SER, (("L", "colorRGB", "Ljava/lang/Integer;"), ("L", "name", "Ljava/lang/String;"),
                  ("L", "parentClass", "Lqupath/lib/objects/classes/PathClass;")), None),
    "qupath.lib.measurements.DefaultMeasurementList": (
        1, _SER, (("L", "list", "Ljava/util/ArrayList;"),), None),
    "qupath.lib.measurements.DoubleMeasurement": (
        1, _SER, (("D", "value", None), ("L", "name", "Ljava/lang/String;")), None),
    ROI_PKG + "PolygonROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;"),
                  ("L", "stats", "Lqupath/lib/roi/ClosedShapeStatistics;"), ("[", "x", "[F"), ("[", "y", "[F")), None),
    ROI_PKG + "PolylineROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("I", "z", None), ("[", "x", "[F"), ("[", "y", "[F")), None),
    ROI_PKG + "PointsROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;"),
                  ("[", "x", "[F"), ("[", "y", "[F")), None),
    ROI_PKG + "RectangleROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("D", "x", None), ("D", "x2", None), ("D", "y", None),
                  ("D", "y2", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;")), None),
    ROI_PKG + "EllipseROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("D", "x", None), ("D", "x2", None), ("D", "y", None),
                  ("D", "y2", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;")), None),
    ROI_PKG + "LineROI$SerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("D", "x", None), ("D", "x2", None), ("D", "y", None),
                  ("D", "y2", None), ("I", "z", None), ("L", "name", "Ljava/lang/String;")), None),
    ROI_PKG + "GeometryROI$WKBSerializationProxy": (
        1, _SER, (("I", "c", None), ("I", "t", None), ("I", "z", None),
                  ("L", "stats", "Lqupath/lib/roi/GeometryROI$GeometryStats;"), ("[", "wkb", "[B")), None),
}


def version_tuple(version: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (version or "0").split("-")[0].split("."):
        try:
            parts.append(int(piece))
        except ValueError:
            break
    return tuple(parts) or (0,)


# ------------------------------------------------------------------------------------------------------------
# Shared Java instances: descriptors, cached Integers, Booleans, constant strings, path classes


class Pool:
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
                    pc = path_class_of(item)
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
            found = self.booleans[bool(value)] = java_object(self.desc("java.lang.Boolean"), value=bool(value))
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
        if desc.superclass is None:
            raise ProjectError("this data file describes java.lang.Integer without its superclass Number")
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
        color = None if pc.color is None else self.integer(pack_argb(pc.color))
        obj = java_object(self.desc("qupath.lib.objects.classes.PathClass"),
                          colorRGB=color, name=J.JavaString(names[-1]), parentClass=parent)
        self.classes[key] = obj
        return obj


def java_object(desc: J.ClassDesc, **values: Any) -> J.JavaObject:
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
        return [java_to_python(v) for v in list_items(value)]
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


def list_items(obj: J.JavaObject) -> list[Any]:
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


def hashmap(pool: Pool, items: Mapping[str, Any]) -> J.JavaObject:
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


def _python_to_java(pool: Pool, value: Any) -> Any:
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


def unpack_color(value: int | None) -> Color | None:
    """The colour of a Java ``Integer`` QuPath stores: RGB when it is opaque (or has no alpha), RGBA otherwise."""
    if value is None:
        return None
    rgba = unpack_argb(value, alpha=True)
    return rgba[:3] if rgba[3] in (0, 255) else rgba


def int_value(obj: Any) -> int | None:
    if isinstance(obj, J.JavaObject) and obj.class_name == "java.lang.Integer":
        return obj.get("value")
    return None


def path_class_of(obj: Any) -> PathClass | None:
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
    return PathClass(": ".join(reversed(names)), unpack_color(int_value(obj.get("colorRGB"))))


def measurements_of(obj: Any) -> dict[str, float]:
    if not isinstance(obj, J.JavaObject):
        return {}
    name = obj.class_name
    out: dict[str, float] = {}
    if name == "qupath.lib.measurements.DefaultMeasurementList":
        items = obj.get("list")
        for m in list_items(items) if isinstance(items, J.JavaObject) else []:
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


def metadata_of(obj: Any) -> dict[str, str]:
    if not isinstance(obj, J.JavaObject) or obj.class_name != OBJECTS_PKG + "MetadataMap":
        return {}
    reader = J.DataReader(obj.external or [], "a MetadataMap")
    reader.read_object()  # version
    keys, values = reader.read_object(), reader.read_object()
    if not isinstance(keys, J.JavaArray) or not isinstance(values, J.JavaArray):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in zip(keys.values, values.values)}


def metadata_map(pool: Pool, metadata: Mapping[str, str], object_id: uuid.UUID) -> J.JavaObject:
    keys = [J.JavaString(k) for k in metadata] + [pool.string(METADATA_KEY_ID)]
    values = [J.JavaString(v) for v in metadata.values()] + [J.JavaString(str(object_id))]
    array = pool.desc("[Ljava.lang.Object;")
    out = J.DataWriter()
    out.write_object(pool.integer(1))
    out.write_object(J.JavaArray(array, keys))
    out.write_object(J.JavaArray(array, values))
    return J.JavaObject(pool.desc(OBJECTS_PKG + "MetadataMap"), external=out.finish())


def measurement_list(pool: Pool, measurements: Mapping[str, float], empty_as_list: bool) -> J.JavaObject | None:
    if not measurements and not empty_as_list:
        return None
    desc = pool.desc("qupath.lib.measurements.DoubleMeasurement")
    out = J.DataWriter()
    out.write_int(len(measurements))
    for name, value in measurements.items():
        out.write_object(java_object(desc, value=float(value), name=pool.string(name)))
    array_desc = pool.desc("java.util.ArrayList")
    array = J.JavaObject(array_desc, [J.ClassData(array_desc, {"size": len(measurements)}, out.finish())])
    return java_object(pool.desc("qupath.lib.measurements.DefaultMeasurementList"), list=array)
