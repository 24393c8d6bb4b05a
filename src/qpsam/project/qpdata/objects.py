"""Path objects of a ``data.qpdata``: QuPath's externalized ``PathObject`` classes to :class:`PathObject` and back.

Objects that were read keep their Java parts (:class:`Parts`); the :class:`Encoder` writes an unchanged object with
them as they were, and rebuilds only what changed, so an unchanged hierarchy is written back byte for byte.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from qpsam.colors import pack_argb
from qpsam.errors import ProjectError
from qpsam.objects import ImagePlane, ObjectType, PathObject, same_measurements

from .. import javaser as J
from .rois import geometry_to_roi, roi_to_geometry
from .values import (
    METADATA_KEY_ID,
    OBJECTS_PKG,
    Pool,
    int_value,
    java_to_python,
    list_items,
    measurement_list,
    measurements_of,
    metadata_map,
    metadata_of,
    path_class_of,
    unpack_color,
)

__all__ = ["Encoder", "Parts", "decode_object", "new_root", "update_tma_grid", "write_parts"]

_CLASS_TYPES = {
    OBJECTS_PKG + "PathAnnotationObject": ObjectType.ANNOTATION,
    OBJECTS_PKG + "PathDetectionObject": ObjectType.DETECTION,
    OBJECTS_PKG + "PathCellObject": ObjectType.CELL,
    OBJECTS_PKG + "PathTileObject": ObjectType.TILE,
    OBJECTS_PKG + "TMACoreObject": ObjectType.TMA_CORE,
}
_TYPE_CLASSES = {v: k for k, v in _CLASS_TYPES.items()}
_ROOT = OBJECTS_PKG + "PathRootObject"


@dataclass
class Parts:
    """What one path object wrote in its ``writeExternal``, in order: ``head`` is everything before the child
    count, ``tail`` everything after the children; each entry is (role, kind, value)."""

    java: J.JavaObject
    head: list[tuple[str, str, Any]]
    tail: list[tuple[str, str, Any]]
    model: PathObject | None = None  # the object as read, without children (None for the root)


def decode_object(java: J.JavaObject, where: str,
                   originals: dict[uuid.UUID, Parts]) -> tuple[Parts, PathObject | None, list[PathObject]]:
    """Decode a path object and its descendants: (its parts, the object or None for a root, its children)."""
    chain = [d.name for d in java.classdesc.hierarchy()]
    if OBJECTS_PKG + "PathObject" not in chain:
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
            if isinstance(value, J.JavaObject) and value.class_name == OBJECTS_PKG + "MetadataMap":
                metadata_obj = value
                head.append(("metadata", "obj", value))
            elif isinstance(value, J.JavaObject) and ".measurements." in value.class_name:
                measurements_obj = value
                head.append(("measurements", "obj", value))
            else:
                head.append(("extra", "obj", value))
    else:
        if isinstance(nxt, J.JavaObject) and nxt.class_name == OBJECTS_PKG + "MetadataMap":
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
    geometry: BaseGeometry = Polygon()  # a missing ROI reads as an empty polygon
    nucleus = None
    plane = ImagePlane()
    ellipse = False
    is_root = OBJECTS_PKG + "PathROIObject" not in chain
    if not is_root:
        first = reader.read_object()
        if isinstance(first, J.JavaObject) and first.class_name == "java.lang.Boolean":
            tail.append(("locked", "obj", first))
            locked = bool(first.get("value"))
            first = reader.read_object()
        tail.append(("class", "obj", first))
        path_class = path_class_of(first)
        roi = read(tail, "roi")
        tail.append(("prob", "double", reader.read_double()))
        if OBJECTS_PKG + "PathCellObject" in chain:
            nucleus_roi = read(tail, "nucleus")
            if nucleus_roi is not None:
                nucleus = roi_to_geometry(nucleus_roi, where + " (nucleus)")[0]
        if OBJECTS_PKG + "TMACoreObject" in chain:
            tail.append(("missing", "bool", reader.read_boolean()))
        if roi is not None:
            geometry, plane, ellipse = roi_to_geometry(roi, where)
    while not reader.at_end():
        tail.append(("raw", "obj", reader.read_object()))
    parts = Parts(java, head, tail)

    children: list[PathObject] = []
    for k, child in enumerate(children_java):
        if not isinstance(child, J.JavaObject):
            raise ProjectError(f"{where}: child {k} is not a path object ({child!r})")
        _, decoded, _ = decode_object(child, f"{where} > child {k}", originals)
        if decoded is None:
            raise ProjectError(f"{where}: child {k} is a root object")
        children.append(decoded)
    if is_root:
        return parts, None, children

    metadata = metadata_of(metadata_obj)
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
            name=None if not isinstance(name, str) else str(name), color=unpack_color(int_value(color)),
            locked=locked, measurements=measurements_of(measurements_obj), plane=plane, id=object_id,
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


class Encoder:
    def __init__(self, pool: Pool, originals: Mapping[uuid.UUID, Parts], version: tuple[int, ...]) -> None:
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
            put(head, "color", None if obj.color is None else pool.integer(pack_argb(obj.color)))
        if old is None or old.id != obj.id or dict(old.metadata) != dict(obj.metadata):
            roles = [r for r, _, _ in head]
            if "uuid" in roles:  # data file version 4: rewrite this object in version 3's layout
                head = [("name", "obj", head[0][2]), ("color", "obj", head[1][2]), ("metadata", "obj", None),
                        ("measurements", "obj", next((v for r, _, v in head if r == "measurements"), None))]
            elif "metadata" not in roles:
                head.insert(roles.index("measurements"), ("metadata", "obj", None))
            put(head, "metadata", metadata_map(pool, obj.metadata, obj.id))
        if old is None or not same_measurements(old.measurements, obj.measurements):
            put(head, "measurements", measurement_list(pool, obj.measurements, self.version >= (0, 6)))
        if changed("locked"):
            roles = [r for r, _, _ in tail]
            if "locked" not in roles:
                tail.insert(0, ("locked", "obj", None))
            put(tail, "locked", pool.boolean(obj.locked))
        if changed("path_class"):
            put(tail, "class", None if obj.path_class is None else pool.path_class(obj.path_class))
        if old is None or not _same_geometry(old.geometry, obj.geometry) or old.plane != obj.plane \
                or old.ellipse != obj.ellipse:
            put(tail, "roi", geometry_to_roi(pool, obj.geometry, obj.plane, obj.ellipse, self.version))
        if obj.object_type is ObjectType.CELL and (old is None or not _same_geometry(old.nucleus, obj.nucleus)
                                                   or old.plane != obj.plane):
            put(tail, "nucleus", None if obj.nucleus is None else geometry_to_roi(pool, obj.nucleus, obj.plane,
                                                                                     False, self.version))
        java.external = write_parts(head, children, tail)
        return java


def write_parts(head: Sequence[tuple[str, str, Any]], children: Sequence[J.JavaObject],
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


def new_root(pool: Pool, root_id: uuid.UUID, version: tuple[int, ...]) -> Parts:
    """The parts of an empty root object, as QuPath ``version`` writes it for a new image."""
    return Parts(J.JavaObject(pool.desc(_ROOT), external=[]),
                 [("name", "obj", None), ("color", "obj", None),
                  ("metadata", "obj", metadata_map(pool, {}, root_id)),
                  ("measurements", "obj", measurement_list(pool, {}, version >= (0, 6)))],
                 [])


def update_tma_grid(hierarchy: J.JavaObject, kept: set[uuid.UUID], originals: Mapping[uuid.UUID, Parts]) -> None:
    grid = hierarchy.get("tmaGrid")
    if not isinstance(grid, J.JavaObject):
        return
    removed = {id(p.java) for oid, p in originals.items() if oid not in kept}
    for data in grid.class_data:
        for value in data.values.values():
            if isinstance(value, J.JavaObject) and value.class_name == "java.util.ArrayList":
                items = list_items(value)
                if any(id(i) in removed for i in items):
                    # QuPath cannot keep a grid whose cores are gone; drop the grid, as deleting cores there does.
                    hierarchy.set("tmaGrid", None)
                    return


