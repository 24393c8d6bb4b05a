"""The ``data.qpdata`` file: :class:`QpData`, reading it, and writing it safely with its ``summary.json``.

The file is read with :mod:`qpsam.project.javaser` into a generic stream model; :mod:`.objects` interprets the
hierarchy in it. Objects that were read and are unchanged are written with their original Java parts, so an
unchanged file is written back byte for byte; new or edited objects are written the way QuPath writes them.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import shapely
from shapely.geometry import MultiPoint, MultiPolygon
from shapely.geometry.base import BaseGeometry

from qpsam.errors import ProjectError
from qpsam.fileio import commit_all, stage
from qpsam.objects import ObjectType, PathObject, same_measurements, walk

from .. import javaser as J
from ..qpproj import read_bytes
from .objects import Encoder, Parts, decode_object, new_root, update_tma_grid, write_parts
from .values import METADATA_KEY_ID, Pool, hashmap, java_object, java_to_python, metadata_of, version_tuple

__all__ = [
    "DATA_FILE_VERSION", "QpData", "new_qpdata", "parse_qpdata", "read_qpdata", "summarize", "summary_json",
    "write_qpdata",
]

DATA_FILE_VERSION = 3


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
    _originals: dict[uuid.UUID, Parts] = field(default_factory=dict, repr=False)
    _root: Parts | None = field(default=None, repr=False)
    _properties_read: dict[str, Any] | None = field(default=None, repr=False)
    _image_type_read: str | None = field(default=None, repr=False)

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return version_tuple(self.qupath_version)

    def all_objects(self) -> list[PathObject]:
        """Every object, depth first."""
        return list(walk(self.objects))

    def to_bytes(self, class_colors: Mapping[str, tuple[int, ...]] | None = None) -> bytes:
        """Serialise as QuPath does (unchanged objects byte for byte as they were read)."""
        stream = self._stream if self._stream is not None else _new_stream(self)
        pool = Pool()
        pool.harvest(stream)
        # A derived class ("Tumor: Positive") stores its parent: give the parent the colour its own objects use,
        # since QuPath keeps the first colour it reads for a class name.
        for obj in walk(self.objects):
            if obj.path_class is not None and obj.path_class.color is not None:
                pool.class_colors.setdefault(obj.path_class.name, obj.path_class.color)
        if class_colors:
            pool.class_colors.update(class_colors)
        contents = list(stream.contents)
        hierarchy_index = _find(contents, "qupath.lib.objects.hierarchy.PathObjectHierarchy")
        if hierarchy_index is None:
            raise ProjectError(f"{self.path or 'data file'}: no PathObjectHierarchy in the file")
        hierarchy = contents[hierarchy_index]
        encoder = Encoder(pool, self._originals, self.version_tuple)
        children = [encoder.encode(obj, f"object {k} ({obj.id})") for k, obj in enumerate(self.objects)]
        root = self._root
        if root is None:
            root = new_root(pool, self.root_id, self.version_tuple)
        root.java.external = write_parts(root.head, children, root.tail)
        if hierarchy.get("rootObject") is not root.java:
            hierarchy.set("rootObject", root.java)
        update_tma_grid(hierarchy, encoder.used, self._originals)
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
            index = _find(contents, "java.util.HashMap", after=hierarchy_index)
            new_map = hashmap(pool, self.properties)
            if index is None:
                contents.insert(hierarchy_index + 1, new_map)
            else:
                contents[index] = new_map
        return J.dumps(J.JavaStream(contents, stream.version))


def _plain(value: Any) -> Any:
    return java_to_python(value) if not isinstance(value, dict) else {k: _plain(v) for k, v in value.items()}


def _find(contents: list[Any], class_name: str, after: int = -1) -> int | None:
    for i, item in enumerate(contents):
        if i > after and isinstance(item, J.JavaObject) and item.class_name == class_name:
            return i
    return None


def _find_enum(contents: list[Any], class_name: str) -> int | None:
    for i, item in enumerate(contents):
        if isinstance(item, J.JavaEnum) and item.classdesc.name == class_name:
            return i
    return None


@contextmanager
def _damage_named(where: str, unreadable: str, damaged: str) -> Iterator[None]:
    """Turn what a damaged file makes the decoder raise into a :class:`ProjectError` naming ``where``.

    ``unreadable`` words a broken Java stream (``{exc}`` is the error), ``damaged`` values no object can hold.
    """
    try:
        yield
    except ProjectError:
        raise
    except J.JavaSerError as exc:
        raise ProjectError(f"{where}: " + unreadable.format(exc=exc)) from exc
    except RecursionError:
        raise ProjectError(f"{where}: objects nested too deeply to read") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file parses into values no object can hold
        raise ProjectError(f"{where}: {damaged} ({type(exc).__name__}: {exc})") from exc


def parse_qpdata(data: bytes, where: str = "data.qpdata") -> QpData:
    """Decode the bytes of a ``data.qpdata`` file; a damaged file raises :class:`ProjectError` naming ``where``."""
    with _damage_named(where, "not a readable QuPath data file ({exc})", "damaged data"):
        return _parse_qpdata(data, where)


def _parse_qpdata(data: bytes, where: str) -> QpData:
    stream = J.loads(data)
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
    originals: dict[uuid.UUID, Parts] = {}
    if not isinstance(root_java, J.JavaObject):
        raise ProjectError(f"{where}: the hierarchy has no root object")
    with _damage_named(where, "{exc}", "damaged object data"):
        root, root_model, objects = decode_object(root_java, f"{where}: root", originals)
    if root_model is not None:
        raise ProjectError(f"{where}: the hierarchy's root is not a root object ({root_java.class_name})")
    root_metadata = metadata_of(next((v for r, _, v in root.head if r == "metadata"), None))
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
    result = parse_qpdata(read_bytes(path, "data file"), str(path))
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
    pool = Pool()
    out = J.DataWriter()
    out.write_utf(f"Data file version {DATA_FILE_VERSION}")
    header: dict[str, Any] = {"dataVersion": DATA_FILE_VERSION, "qupathVersion": data.qupath_version}
    if data.server is not None:
        header["server"] = data.server
    out.write_object(J.JavaString(json.dumps(header, separators=(",", ":"), ensure_ascii=False)))
    empty = J.JavaString("")
    out.write_object(java_object(pool.desc("java.util.Locale"), hashcode=-1, country=J.JavaString("US"),
                                 extensions=empty, language=J.JavaString("en"), script=empty, variant=empty))
    out.write_object(None if data.image_type is None else J.JavaEnum(
        pool.desc("qupath.lib.images.ImageData$ImageType"), J.JavaString(data.image_type)))
    out.write_object(None)  # colour deconvolution stains
    workflow = J.DataWriter()
    workflow.write_int(1)
    workflow.write_int(0)
    out.write_object(J.JavaObject(pool.desc("qupath.lib.plugins.workflow.Workflow"), external=workflow.finish()))
    out.write_object(java_object(pool.desc("qupath.lib.objects.hierarchy.PathObjectHierarchy"), rootObject=None,
                                 tmaGrid=None))
    out.write_object(hashmap(pool, data.properties))
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
        if dict(a.metadata) != dict(b.metadata) or not same_measurements(a.measurements, b.measurements):
            return f"object {a.id}: metadata or measurements changed"
        if not a.ellipse and not _near(a.geometry, b.geometry, tolerance):
            return f"object {a.id}: geometry changed"
        if (a.nucleus is None) != (b.nucleus is None) or (
                a.nucleus is not None and b.nucleus is not None and not _near(a.nucleus, b.nucleus, tolerance)):
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

