"""The paquo backend: the same project interface over QuPath itself (paquo + JPype).

Used when paquo is installed and finds a QuPath installation (``pip install 'qpsam[paquo]'``, then QuPath in a
standard place or ``PAQUO_QUPATH_DIR``); tested with QuPath 0.5.1, 0.6.0 and 0.7.0. Objects travel between QuPath
and qpsam's object model as JTS WKB geometries (doubles, no rounding) with the image plane carried explicitly.

paquo's and QuPath's traps, and what this module does about them:

* Reading changes the folder: ``ProjectIO.loadProject`` creates ``classifiers/`` (and fails on a read-only
  project). Mode ``r`` therefore loads a private copy of ``project.qpproj`` whose other items link to the real
  ones, so reading leaves the project exactly as it was and works on read-only folders.
* paquo's ``save()`` skips entries whose image is unreachable, QuPath 0.5.1 leaves a 4-byte ``data.qpdata``
  when the entry's server cannot be built, and 0.7.0 refuses such an entry. Here an entry is saved through
  QuPath's ``saveImageData`` when QuPath can, with the previous file kept as ``data.qpdata.backup`` and put
  back on any failure; otherwise with qpsam's native writer. Either way QuPath's ``PathIO.readHierarchy`` then
  reads the file back and must find every object.
* paquo reads sizes through its server recovery, which crashes in paquo 0.9.0 (``'bool' object is not
  callable``) when ``server.json`` is missing. Sizes and channels come from the server builder's metadata,
  ``server.json`` or QuPath's server instead; paquo's entry properties are not used.
* QuPath writes its own version into ``project.qpproj``. Opening a project of another version for writing
  refuses unless ``keep_version`` says what to do: ``True`` puts the project's version back after each save,
  ``False`` lets QuPath's version stand.
* Pixels: qpsam's own readers where they read the file as QuPath's server describes it, QuPath's server where
  only QuPath can (wrapped servers, formats qpsam lacks), else an error naming the entry.
* Java 22+ warns about JPype's native access on every start: the JVM is started with native access enabled.
* ROIs are built with ``GeometryTools.geometryToROI(geometry, plane)`` and read back with their c/z/t.
* QuPath rewrites ``project.qpproj`` from its own model, dropping fields it does not know; they are merged back
  after every save.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from qpsam.errors import ImageReadError, ProjectError
from qpsam.geometry import Region
from qpsam.objects import ImagePlane, ObjectType, PathClass, PathObject, walk

from . import hierarchy as hy
from . import pixels as px
from . import qpproj as pj
from .native import IMAGE_TYPES, MODES, NativeEntry, NativeProject, ProjectLock, truncate_project
from .qpdata import ellipse_polygon, new_qpdata, read_qpdata, summarize, write_qpdata

__all__ = ["available", "unavailable_reason", "qupath_version", "PaquoProject", "PaquoEntry"]

_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why the paquo backend cannot run here (None when it can)."""
    if importlib.util.find_spec("paquo") is None:
        return "paquo is not installed (pip install 'qpsam[paquo]')"
    if importlib.util.find_spec("jpype") is None:
        return "JPype1 is not installed (pip install 'qpsam[paquo]')"
    try:
        from paquo._config import settings, to_kwargs
        from paquo.jpype_backend import find_qupath

        find_qupath(**to_kwargs(settings))
    except Exception as exc:  # noqa: BLE001 - paquo raises ValueError, FileNotFoundError, ...
        return f"paquo finds no QuPath installation ({exc}); install QuPath or set PAQUO_QUPATH_DIR"
    return None


def available() -> bool:
    """True when paquo and a QuPath installation are present (the JVM is not started by asking)."""
    return unavailable_reason() is None


def _java_major(runtime_dir: Path) -> int:
    """The Java feature version of a runtime folder (from its ``release`` file; 0 when unknown)."""
    try:
        text = (Path(runtime_dir) / "release").read_text(errors="replace")
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("JAVA_VERSION="):
            head = line.split("=", 1)[1].strip().strip('"').split(".")[0]
            return int(head) if head.isdigit() else 0
    return 0


def _start_jvm() -> None:
    """Start QuPath's JVM through paquo, with native access enabled on Java 22+ (else every run prints
    "Restricted methods will be blocked in a future release") and QuPath's own logging at WARN."""
    import jpype

    if jpype.isJVMStarted():
        return
    from paquo._config import settings, to_kwargs
    from paquo.jpype_backend import find_qupath, start_jvm

    def finder(**kwargs: Any) -> Any:
        info = find_qupath(**kwargs)
        app_dir, runtime_dir, jvm_path, options = info
        options = list(options)
        if _java_major(runtime_dir) >= 22 and not any(o.startswith("--enable-native-access") for o in options):
            options.append("--enable-native-access=ALL-UNNAMED")
        # QuPath logs every save at INFO ("Writing object hierarchy ..."): users see warnings and errors only.
        if not any(o.startswith("-Dorg.slf4j.simpleLogger.defaultLogLevel") for o in options):
            options.append("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        return type(info)(app_dir, runtime_dir, jvm_path, options)

    start_jvm(finder=finder, finder_kwargs=to_kwargs(settings))


@functools.lru_cache(maxsize=1)
def _java() -> Any:
    """QuPath's Java classes (starts the JVM on first use)."""
    _start_jvm()
    import paquo.java  # noqa: F401 - paquo's own start-up checks, once the JVM runs
    from jpype import JClass

    # Without QuPath's GUI, the Gson adapters of wrapped servers (a `color` entry's ColorTransform among them) are
    # registered by these classes' static initialisers: without them a project holding such an entry cannot load.
    for name in ("qupath.lib.images.servers.ImageServers", "qupath.lib.scripting.QP"):
        try:
            JClass("java.lang.Class").forName(name)
        except Exception:  # noqa: BLE001 - an installation without the scripting class reads plain projects still
            pass

    class J:
        ImagePlane = JClass("qupath.lib.regions.ImagePlane")
        RegionRequest = JClass("qupath.lib.regions.RegionRequest")
        ROIs = JClass("qupath.lib.roi.ROIs")
        GeometryTools = JClass("qupath.lib.roi.GeometryTools")
        PathObjects = JClass("qupath.lib.objects.PathObjects")
        PathClass = JClass("qupath.lib.objects.classes.PathClass")
        PathIO = JClass("qupath.lib.io.PathIO")
        GsonTools = JClass("qupath.lib.io.GsonTools")
        GeneralTools = JClass("qupath.lib.common.GeneralTools")
        ImageType = JClass("qupath.lib.images.ImageData$ImageType")
        Projects = JClass("qupath.lib.projects.Projects")
        File = JClass("java.io.File")
        Paths = JClass("java.nio.file.Paths")
        BufferedImage = JClass("java.awt.image.BufferedImage")
        UUID = JClass("java.util.UUID")
        Integer = JClass("java.lang.Integer")
        ArrayList = JClass("java.util.ArrayList")
        WKBReader = JClass("org.locationtech.jts.io.WKBReader")
        WKBWriter = JClass("org.locationtech.jts.io.WKBWriter")
        MeasurementListFactory = JClass("qupath.lib.measurements.MeasurementListFactory")
        DOUBLE = JClass("qupath.lib.measurements.MeasurementList$MeasurementListType").DOUBLE

    return J


def qupath_version() -> str:
    """The version of the QuPath that paquo runs here (starts the JVM)."""
    return str(_java().GeneralTools.getVersion())


def _java_message(exc: BaseException) -> str:
    """A one-line reason from a Java or paquo exception (no traceback)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace("java.lang.", "").replace("java.io.", "")


# ------------------------------------------------------------------------------------------------------------
# Objects: Java <-> qpsam


def _rgb(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    packed = int(value) & 0xFFFFFFFF
    a, r, g, b = packed >> 24, (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    return (r, g, b) if a in (0, 255) else (r, g, b, a)


def _packed(color: Sequence[int]) -> int:
    r, g, b = color[:3]
    a = color[3] if len(color) > 3 else 255
    value = (a << 24) | (r << 16) | (g << 8) | b
    return value - (1 << 32) if value >= 1 << 31 else value


def _geometry_of(J: Any, roi: Any) -> Any:
    """A ROI's geometry as the native reader gives it: from the ROI's own stored points where it has them
    (``getGeometry()`` snaps to QuPath's 0.01 px precision model), else its JTS geometry."""
    import shapely
    from shapely.geometry import LineString, MultiPoint, Point, Polygon

    kind = str(roi.getClass().getSimpleName())
    if kind in ("PolygonROI", "PolylineROI", "PointsROI", "RectangleROI", "EllipseROI", "LineROI"):
        pts = [(float(p.getX()), float(p.getY())) for p in roi.getAllPoints()]
        if kind == "PointsROI":
            return Point(pts[0]) if len(pts) == 1 else MultiPoint(pts)
        if kind in ("PolylineROI", "LineROI"):
            return LineString(pts)
        if kind in ("RectangleROI", "EllipseROI"):
            x, y = float(roi.getBoundsX()), float(roi.getBoundsY())
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            x2, y2 = (max(xs), max(ys)) if kind == "RectangleROI" else \
                (x + float(roi.getBoundsWidth()), y + float(roi.getBoundsHeight()))
            if kind == "EllipseROI":
                return ellipse_polygon(x, y, x2, y2)
            return Polygon([(x, y), (x, y2), (x2, y2), (x2, y), (x, y)])
        if not pts:
            return Polygon()
        while len(pts) < 3:
            pts.append(pts[-1])
        return Polygon(pts)
    wkb = bytes(J.WKBWriter(2).write(roi.getGeometry()))
    return shapely.from_wkb(wkb)


def _from_java(J: Any, obj: Any) -> PathObject:
    if obj.isCell():
        kind = ObjectType.CELL
    elif obj.isTile():
        kind = ObjectType.TILE
    elif obj.isTMACore():
        kind = ObjectType.TMA_CORE
    elif obj.isDetection():
        kind = ObjectType.DETECTION
    else:
        kind = ObjectType.ANNOTATION
    roi = obj.getROI()
    plane = ImagePlane(int(roi.getC()), int(roi.getZ()), int(roi.getT()))
    ellipse = str(roi.getClass().getSimpleName()) == "EllipseROI"
    pc = obj.getPathClass()
    path_class = None if pc is None else PathClass(str(pc.toString()), _rgb(pc.getColor()))
    measurements = {}
    ml = obj.getMeasurementList()
    names = ml.getNames() if hasattr(ml, "getNames") else ml.getMeasurementNames()
    for name in names:
        value = ml.get(name) if hasattr(ml, "get") else ml.getMeasurementValue(name)
        measurements[str(name)] = float(value)
    metadata: dict[str, str] = {}
    if hasattr(obj, "getMetadata"):
        metadata = {str(k): str(v) for k, v in dict(obj.getMetadata()).items()}
    nucleus = None
    if kind is ObjectType.CELL and obj.getNucleusROI() is not None:
        nucleus = _geometry_of(J, obj.getNucleusROI())
    children = tuple(_from_java(J, c) for c in obj.getChildObjectsAsArray())
    return PathObject(
        geometry=_geometry_of(J, roi), object_type=kind, path_class=path_class,
        name=None if obj.getName() is None else str(obj.getName()), color=_rgb(obj.getColor()),
        locked=bool(obj.isLocked()), measurements=measurements, plane=plane, id=uuid.UUID(str(obj.getID())),
        children=children, nucleus=nucleus, ellipse=ellipse, metadata=metadata,
    )


def _roi(J: Any, geometry: Any, plane: ImagePlane, ellipse: bool) -> Any:
    import shapely

    jplane = J.ImagePlane.getPlaneWithChannel(plane.c, plane.z, plane.t)
    if ellipse:
        x0, y0, x1, y1 = geometry.bounds
        return J.ROIs.createEllipseROI(x0, y0, x1 - x0, y1 - y0, jplane)
    jts = J.WKBReader().read(shapely.to_wkb(geometry, byte_order=0, output_dimension=2))
    return J.GeometryTools.geometryToROI(jts, jplane)


def _path_class(J: Any, path_class: PathClass | None) -> Any:
    """QuPath's class of that name, with that colour. QuPath keeps one PathClass per name in its JVM
    (``Stroma`` comes with its own colour): the colour is set on it, as QuPath does when a class is edited."""
    if path_class is None:
        return None
    pc = J.PathClass.fromString(path_class.name)
    if path_class.color is not None and _rgb(pc.getColor()) != tuple(path_class.color):
        pc.setColor(J.Integer(_packed(path_class.color)))
    return pc


def _to_java(J: Any, obj: PathObject) -> Any:
    roi = _roi(J, obj.geometry, obj.plane, obj.ellipse)
    pc = _path_class(J, obj.path_class)
    # Doubles: QuPath gives detections float lists by default, which would round qpsam's values.
    ml = J.MeasurementListFactory.createMeasurementList(len(obj.measurements), J.DOUBLE) \
        if obj.measurements else None
    if obj.object_type is ObjectType.ANNOTATION:
        java = J.PathObjects.createAnnotationObject(roi, pc, ml)
    elif obj.object_type is ObjectType.DETECTION:
        java = J.PathObjects.createDetectionObject(roi, pc, ml)
    elif obj.object_type is ObjectType.TILE:
        java = J.PathObjects.createTileObject(roi, pc, ml)
    elif obj.object_type is ObjectType.CELL:
        nucleus = None if obj.nucleus is None else _roi(J, obj.nucleus, obj.plane, False)
        java = J.PathObjects.createCellObject(roi, nucleus, pc, ml)
    else:
        raise ProjectError(f"object {obj.id}: the paquo backend cannot create {obj.object_type.value} objects")
    # QuPath spells it setID in 0.5.1 to 0.7.0 (paquo calls setId, which none of them has).
    set_id = getattr(java, "setID", None) or java.setId
    set_id(J.UUID.fromString(str(obj.id)))
    if obj.name is not None:
        java.setName(obj.name)
    if obj.color is not None:
        java.setColor(J.Integer(_packed(obj.color)))
    if obj.locked:
        java.setLocked(True)
    if obj.measurements:
        _put_measurements(J, java, obj.measurements)
    if obj.metadata and hasattr(java, "getMetadata"):
        meta = java.getMetadata()
        for key, value in obj.metadata.items():
            meta.put(key, value)
    if obj.children:
        children = J.ArrayList()
        for child in obj.children:
            children.add(_to_java(J, child))
        java.addChildObjects(children)
    return java


def _put_measurements(J: Any, java: Any, values: Mapping[str, float]) -> None:
    from jpype import JDouble

    ml = java.getMeasurementList()
    for name, value in values.items():
        ml.put(name, JDouble(value))
    ml.close()


def _reuse(J: Any, java: Any, old: PathObject, new: PathObject) -> bool:
    """Bring QuPath's object ``java`` (read as ``old``) to ``new`` in place, so that what did not change keeps
    QuPath's own encoding (QuPath's API stores new measurement values as floats); False when it must be
    created anew (another type, or a cell's outline changed)."""
    if old.object_type is not new.object_type or old.plane != new.plane or old.ellipse != new.ellipse:
        return False
    if not old.geometry.equals_exact(new.geometry, 0.0) or (
            (old.nucleus is None) != (new.nucleus is None)
            or (old.nucleus is not None and not old.nucleus.equals_exact(new.nucleus, 0.0))):
        if new.object_type is not ObjectType.ANNOTATION:
            return False
        java.setROI(_roi(J, new.geometry, new.plane, new.ellipse))
    if old.path_class != new.path_class:
        java.setPathClass(_path_class(J, new.path_class))
    if old.name != new.name:
        java.setName(new.name)
    if old.color != new.color:
        java.setColor(None if new.color is None else J.Integer(_packed(new.color)))
    if old.locked != new.locked:
        java.setLocked(bool(new.locked))
    if dict(old.measurements) != dict(new.measurements):
        ml = java.getMeasurementList()
        gone = [k for k in old.measurements if k not in new.measurements]
        if gone:
            ml.removeAll(*gone) if hasattr(ml, "removeAll") else ml.removeMeasurements(*gone)
        changed = {k: v for k, v in new.measurements.items()
                   if k not in old.measurements or old.measurements[k] != v}
        if list(new.measurements) != [k for k in old.measurements if k in new.measurements] + \
                [k for k in new.measurements if k not in old.measurements]:
            return False  # another order: QuPath keeps insertion order
        _put_measurements(J, java, changed)
    if dict(old.metadata) != dict(new.metadata):
        if not hasattr(java, "getMetadata"):
            return False
        meta = java.getMetadata()
        meta.clear()
        for key, value in new.metadata.items():
            meta.put(key, value)
    return True


def _ids(J: Any, hierarchy: Any) -> list[str]:
    """Every object id of a Java hierarchy (the root excluded), depth first."""
    out: list[str] = []
    stack = list(hierarchy.getRootObject().getChildObjectsAsArray())
    while stack:
        obj = stack.pop()
        out.append(str(obj.getID()))
        stack.extend(obj.getChildObjectsAsArray())
    return out


# ------------------------------------------------------------------------------------------------------------


def _json_of(J: Any, value: Any) -> dict[str, Any] | None:
    """A Java object as QuPath's Gson writes it (server builders, server metadata)."""
    try:
        data = json.loads(str(J.GsonTools.getInstance().toJson(value)))
    except Exception:  # noqa: BLE001 - builders QuPath cannot serialise
        return None
    return data if isinstance(data, dict) else None


class PaquoEntry:
    """An image entry backed by QuPath's ``ProjectImageEntry`` (same interface as the native entry)."""

    def __init__(self, project: "PaquoProject", entry: Any) -> None:
        self._project = project
        self._entry = entry
        self._objects: list[PathObject] | None = None
        self._loaded: tuple[PathObject, ...] = ()
        self._image_type: str | None = None
        self._image_data: Any = None
        self._properties: dict[str, Any] | None = None
        self._properties_read: dict[str, Any] | None = None
        self._meta_cache: dict[str, Any] | None = None
        self._server: Any = None
        self._pixels: Any = None  # "native" (a NativeEntry twin) or "qupath" once chosen

    def __repr__(self) -> str:
        return f"<ImageEntry {self.id}: {self.name!r} (paquo)>"

    @property
    def _java(self) -> Any:
        return self._entry.java_object

    @property
    def id(self) -> int:
        return int(str(self._java.getID()))

    @property
    def name(self) -> str:
        return str(self._java.getImageName())

    @name.setter
    def name(self, value: str) -> None:
        self._project._check_writable()
        self._java.setImageName(value)

    @property
    def description(self) -> str | None:
        text = self._java.getDescription()
        return None if text is None or not str(text) else str(text)

    @description.setter
    def description(self, value: str | None) -> None:
        self._project._check_writable()
        self._java.setDescription(value or None)

    @property
    def metadata(self) -> Any:
        """The entry's metadata (a live mapping: changes apply at once)."""
        return self._entry.metadata

    @property
    def tags(self) -> list[str]:
        return []

    @property
    def server_builder(self) -> dict[str, Any]:
        """The entry's server builder as QuPath writes it in ``project.qpproj``."""
        return _json_of(_java(), self._java.getServerBuilder()) or {}

    @property
    def uri(self) -> str | None:
        return pj.builder_uri(self.server_builder)

    @property
    def data_dir(self) -> Path:
        # The real folder, also when mode 'r' loaded QuPath from a private copy.
        return self._project.path / "data" / str(self.id)

    @property
    def data_file(self) -> Path:
        return self.data_dir / "data.qpdata"

    def _twin(self) -> NativeEntry:
        """The same entry read by the native backend (for metadata and qpsam's own pixel readers)."""
        return NativeEntry(self._project._native_twin(), {
            "entryID": self.id, "imageName": self.name, "serverBuilder": self.server_builder})

    @property
    def image_path(self) -> Path | None:
        return self._twin().image_path

    def _meta(self) -> dict[str, Any]:
        """QuPath's server metadata: from the builder, ``server.json``, or QuPath's server (built once)."""
        if self._meta_cache is not None:
            return self._meta_cache
        meta = pj.builder_metadata(self.server_builder)
        server_json = self.data_dir / "server.json"
        if meta is None and server_json.exists():
            try:
                meta = pj.builder_metadata(pj.read_json(server_json, "server description"))
            except ProjectError:
                meta = None
        if meta is None:
            server = self._qupath_server()
            if server is not None:
                meta = _json_of(_java(), server.getMetadata())
        if meta is None:
            try:
                meta = self._twin().reader().qupath_metadata()
            except ImageReadError:
                meta = {}
        self._meta_cache = meta
        return meta

    width = property(lambda self: int(self._meta().get("width", 0)))
    height = property(lambda self: int(self._meta().get("height", 0)))
    n_channels = property(lambda self: len(self._meta().get("channels", [])) or 1)
    size_z = property(lambda self: int(self._meta().get("sizeZ", 1)))
    size_t = property(lambda self: int(self._meta().get("sizeT", 1)))

    @property
    def channels(self) -> list[px.ChannelInfo]:
        out = []
        for i, c in enumerate(self._meta().get("channels", [])):
            out.append(px.ChannelInfo(str(c.get("name", f"Channel {i + 1}")), _rgb(c.get("color"))))
        return out

    @property
    def pixel_type(self) -> str | None:
        return self._meta().get("pixelType")

    @property
    def is_rgb(self) -> bool:
        return bool(self._meta().get("isRGB", False))

    @property
    def downsamples(self) -> list[float]:
        return [float(level.get("downsample", 1.0)) for level in self._meta().get("levels", [])] or [1.0]

    @property
    def pixel_size(self) -> tuple[float, float] | None:
        cal = self._meta().get("pixelCalibration", {})
        pw, ph = cal.get("pixelWidth", {}), cal.get("pixelHeight", {})
        if pw.get("unit") in ("µm", "um", "microns") and ph.get("unit") in ("µm", "um", "microns"):
            return float(pw["value"]), float(ph["value"])
        return None

    # -- image data (type, properties) ---------------------------------------------------------------------
    def _read_image_data(self) -> Any:
        """QuPath's ImageData of the entry, or None where QuPath cannot build it here (0.5.1 builds the server
        first, so entries whose image it cannot open have none)."""
        if self._image_data is None:
            try:
                self._image_data = self._java.readImageData()
            except Exception as exc:  # noqa: BLE001 - Java IOException/RuntimeException
                _log.debug("entry %s: QuPath cannot read its image data (%s)", self.id, _java_message(exc))
                self._image_data = False
        return self._image_data or None

    @property
    def image_type(self) -> str | None:
        if self._image_type is not None:
            return self._image_type
        data = self._read_image_data()
        if data is not None:
            return str(data.getImageType().name())
        if self.data_file.exists():
            return read_qpdata(self.data_file).image_type
        return "UNSET"

    @image_type.setter
    def image_type(self, value: str | None) -> None:
        self._project._check_writable()
        if value not in IMAGE_TYPES:
            raise ProjectError(f"image type must be one of {', '.join(IMAGE_TYPES)}, got {value!r}")
        self._image_type = value

    @property
    def properties(self) -> dict[str, Any]:
        """The image's properties stored in ``data.qpdata`` (edit in place, then save)."""
        if self._properties is None:
            data = self._read_image_data()
            if data is not None:
                props = {str(k): (str(v) if v is not None else None) for k, v in dict(data.getProperties()).items()}
            elif self.data_file.exists():
                props = dict(read_qpdata(self.data_file).properties)
            else:
                props = {}
            self._properties = props
            self._properties_read = dict(props)
        return self._properties

    # -- hierarchy ----------------------------------------------------------------------------------------
    def _tree(self) -> list[PathObject]:
        if self._objects is None:
            J = _java()
            if self.data_file.exists():
                # QuPath reads a truncated data.qpdata in an endless loop: qpsam's parser checks it first.
                try:
                    read_qpdata(self.data_file)
                except ProjectError as exc:
                    raise ProjectError(f"entry {self.id} ({self.name}): {exc}") from None
            try:
                root = self._java.readHierarchy().getRootObject()
                self._objects = [_from_java(J, c) for c in root.getChildObjectsAsArray()]
            except Exception as exc:  # noqa: BLE001 - Java exceptions for unreadable data
                raise ProjectError(f"entry {self.id} ({self.name}): QuPath cannot read {self.data_file} "
                                   f"({_java_message(exc)})") from None
            self._loaded = tuple(self._objects)
        return self._objects

    @property
    def objects(self) -> list[PathObject]:
        return list(self._tree())

    def all_objects(self) -> list[PathObject]:
        return list(walk(self._tree()))

    def _edit(self, change: Callable[[list[PathObject]], list[PathObject]]) -> None:
        self._project._check_writable()
        try:
            self._objects = change(list(self._tree()))
        except ProjectError as exc:
            raise ProjectError(f"entry {self.id} ({self.name}): {exc}") from None

    def set_objects(self, objects: Iterable[PathObject]) -> None:
        objects = list(objects)
        self._edit(lambda tree: (hy.check_objects(objects), objects)[1])

    def add_objects(self, objects: Iterable[PathObject], parent: PathObject | uuid.UUID | None = None) -> None:
        objects = list(objects)
        self._edit(lambda tree: hy.add_objects(tree, objects, parent))

    def remove_objects(self, objects: Iterable[PathObject | uuid.UUID | str], keep_children: bool = False) -> int:
        objects = list(objects)
        self._edit(lambda tree: hy.remove_objects(tree, objects, keep_children))
        return len({o.id if isinstance(o, PathObject) else str(o) for o in objects})

    def replace_objects(self, objects: Iterable[PathObject]) -> None:
        objects = list(objects)
        self._edit(lambda tree: hy.replace_objects(tree, objects))

    def counts(self) -> dict[str, Any]:
        return summarize(self._tree())

    @property
    def is_changed(self) -> bool:
        if self._objects is not None and tuple(self._objects) != self._loaded:
            return True
        if self._properties is not None and self._properties != self._properties_read:
            return True
        return self._image_type is not None

    def commit(self, run_key: str, records: Sequence[Any], added: Sequence[PathObject] = (),
               removed: Sequence[Any] = ()) -> None:
        """One job's change on this image: journal, edit, verified save, history (:mod:`qpsam.project.commit`)."""
        from .commit import commit

        commit(self, self._project.path, run_key, records, added, removed)

    def save(self) -> None:
        """Write the entry's ``data.qpdata`` if it changed: through QuPath where it can save this entry, else
        with qpsam's native writer; QuPath's reader then checks the file. A failure leaves the old file."""
        self._project._check_writable()
        if not self.is_changed:
            return
        objects = self._tree()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._save_with_qupath(objects):
            objects = self._as_qupath_builds(objects)
            self._objects = objects
            self._save_natively(objects)
        self._check_saved(objects)
        self._loaded = tuple(objects)
        self._image_type = None
        self._properties_read = None if self._properties is None else dict(self._properties)

    def _save_with_qupath(self, objects: list[PathObject]) -> bool:
        """Save through the project entry's ``saveImageData`` or, when the server cannot be built here,
        ``PathIO.writeImageData``; False (nothing written) when QuPath cannot save this entry here."""
        J = _java()
        data = self._read_image_data()
        if data is None:
            return False  # 0.5.1 without a server: saveImageData would leave a 4-byte file
        # 0.7.0's saveImageData refuses an entry whose server cannot be built ("Failed to load ImageServer");
        # PathIO.writeImageData (0.6.0 and 0.7.0 read image data lazily) writes the same file without it.
        whole_entry = self._qupath_server() is not None
        path = self.data_file
        backup = path.with_name(path.name + ".backup")
        qupath_backup = path.with_name(path.name + ".bkp")
        had_bkp = qupath_backup.exists()
        mode = path.stat().st_mode & 0o7777 if path.exists() else None
        if path.exists():
            shutil.copy2(path, backup)
        hierarchy = data.getHierarchy()
        try:
            root = hierarchy.getRootObject()
            existing = {}
            stack = list(root.getChildObjectsAsArray())
            while stack:
                java = stack.pop()
                existing[str(java.getID())] = java
                stack.extend(java.getChildObjectsAsArray())
            loaded = {str(o.id): o for o in walk(self._loaded)}

            def build(obj: PathObject) -> Any:
                java, old = existing.get(str(obj.id)), loaded.get(str(obj.id))
                if java is None or old is None or not _reuse(J, java, old, obj):
                    return _fresh(obj)
                java.clearChildObjects()
                if obj.children:
                    kids = J.ArrayList()
                    for child in obj.children:
                        kids.add(build(child))
                    java.addChildObjects(kids)
                return java

            def _fresh(obj: PathObject) -> Any:
                java = _to_java(J, obj.replace(children=()))
                if obj.children:
                    kids = J.ArrayList()
                    for child in obj.children:
                        kids.add(build(child))
                    java.addChildObjects(kids)
                return java

            children = J.ArrayList()
            for obj in objects:
                children.add(build(obj))
            hierarchy.clearAll()
            root.addChildObjects(children)
            hierarchy.fireHierarchyChangedEvent(root)
            if self._image_type is not None:
                data.setImageType(J.ImageType.valueOf(self._image_type))
            if self._properties is not None and self._properties != self._properties_read:
                for key in list(dict(data.getProperties())):
                    if str(key) not in self._properties:
                        data.removeProperty(key)
                for key, value in self._properties.items():
                    data.setProperty(key, value)
            if whole_entry:
                self._java.saveImageData(data)
            else:
                tmp = path.with_name(f".{path.name}.qpsam-{os.getpid()}")
                try:
                    J.PathIO.writeImageData(J.File(str(tmp)), data)
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
                self._write_summary()
        except Exception as exc:  # noqa: BLE001 - Java exceptions: put the previous file back
            self._restore(path, backup, mode, had_bkp)
            self._image_data = None
            raise ProjectError(f"entry {self.id} ({self.name}): QuPath could not save {path} "
                               f"({_java_message(exc)}); the previous file is unchanged") from None
        if not had_bkp:
            qupath_backup.unlink(missing_ok=True)
        if mode is not None:
            os.chmod(path, mode)
        return True

    def _write_summary(self) -> None:
        """``summary.json`` as QuPath's ``saveImageData`` writes it (counts of what the file now holds)."""
        from qpsam.fileio import atomic_write

        from .qpdata import summary_json

        meta = self._meta()
        atomic_write(self.data_dir / "summary.json", summary_json(read_qpdata(self.data_file), {
            "width": meta.get("width", 0), "height": meta.get("height", 0),
            "sizeC": len(meta.get("channels", [])) or 1, "sizeZ": meta.get("sizeZ", 1),
            "sizeT": meta.get("sizeT", 1)}))

    @staticmethod
    def _restore(path: Path, backup: Path, mode: int | None, had_bkp: bool) -> None:
        if backup.exists() and mode is not None:
            tmp = path.with_name(path.name + ".restore")
            shutil.copy2(backup, tmp)
            os.replace(tmp, path)
            os.chmod(path, mode)
        elif mode is None:
            path.unlink(missing_ok=True)
        if not had_bkp:
            path.with_name(path.name + ".bkp").unlink(missing_ok=True)

    def _as_qupath_builds(self, objects: list[PathObject]) -> list[PathObject]:
        """New or changed objects with the geometry of the ROI QuPath builds for them (its 32-bit polygon
        points, its precision grid), so that the native writer stores what QuPath's own save would have."""
        J = _java()
        loaded = {o.id: o for o in walk(self._loaded)}

        def build(obj: PathObject) -> PathObject:
            children = tuple(build(c) for c in obj.children)
            if loaded.get(obj.id) is not None and loaded[obj.id].replace(children=()) == obj.replace(children=()):
                return obj.replace(children=children) if children != obj.children else obj
            old = loaded.get(obj.id)
            changes: dict[str, Any] = {"children": children}
            # Outlines QuPath already holds stay as read (0.5.1 would restart a polygon at another vertex).
            if not obj.ellipse and not obj.geometry.is_empty and not (
                    old is not None and old.geometry.equals_exact(obj.geometry, 0.0)):
                changes["geometry"] = _geometry_of(J, _roi(J, obj.geometry, obj.plane, False))
            if obj.nucleus is not None and not obj.nucleus.is_empty and not (
                    old is not None and old.nucleus is not None and old.nucleus.equals_exact(obj.nucleus, 0.0)):
                changes["nucleus"] = _geometry_of(J, _roi(J, obj.nucleus, obj.plane, False))
            return obj.replace(**changes)

        return [build(o) for o in objects]

    def _save_natively(self, objects: list[PathObject]) -> None:
        _log.info("entry %s (%s): QuPath %s cannot build its image server here; writing data.qpdata with "
                  "qpsam's native writer (QuPath's reader checks it)", self.id, self.name, self._project.qupath_text)
        path = self.data_file
        data = read_qpdata(path) if path.exists() else new_qpdata(
            self.server_builder or None, self._image_type or "UNSET", self._project.qupath_text,
            f"{self._project.file}::{self.id}")
        data.objects = list(objects)
        if self._image_type is not None:
            data.image_type = self._image_type
        if self._properties is not None:
            data.properties.clear()
            data.properties.update(self._properties)
        meta = self._meta()
        mode = path.stat().st_mode & 0o7777 if path.exists() else None
        # Objects keep their own class colours (QuPath's project list has defaults, e.g. Stroma's).
        write_qpdata(path, data, summary={
            "width": meta.get("width", 0), "height": meta.get("height", 0),
            "sizeC": len(meta.get("channels", [])) or 1, "sizeZ": meta.get("sizeZ", 1),
            "sizeT": meta.get("sizeT", 1)})
        if mode is not None:
            os.chmod(path, mode)

    def _check_saved(self, objects: list[PathObject]) -> None:
        """QuPath's own reader must find exactly the saved objects in the file."""
        J = _java()
        try:
            found = _ids(J, J.PathIO.readHierarchy(J.Paths.get(str(self.data_file))))
        except Exception as exc:  # noqa: BLE001
            raise ProjectError(f"entry {self.id} ({self.name}): QuPath cannot read back {self.data_file} "
                               f"({_java_message(exc)}); the previous file is {self.data_file}.backup") from None
        expected = [str(o.id) for o in walk(objects)]
        if sorted(found) != sorted(expected):
            raise ProjectError(f"entry {self.id} ({self.name}): QuPath reads {len(found)} objects back from "
                               f"{self.data_file}, expected {len(expected)}; the previous file is "
                               f"{self.data_file}.backup")

    # -- pixels ----------------------------------------------------------------------------------------------
    def _qupath_server(self) -> Any:
        """QuPath's image server for the entry, built once (None when QuPath cannot build it here)."""
        if self._server is None:
            try:
                self._server = self._java.getServerBuilder().build()
            except Exception as exc:  # noqa: BLE001 - missing file, missing Bio-Formats, ...
                self._server_error = _java_message(exc)
                self._server = False
        return self._server or None

    def _pixel_source(self) -> Any:
        """qpsam's reader when it reads the file as QuPath describes it, else QuPath's server."""
        if self._pixels is not None:
            return self._pixels
        twin = self._twin()
        native_error = None
        try:
            reader = twin.reader()
            meta = self._meta()
            same = (reader.width, reader.height, reader.size_z, reader.size_t) == (
                int(meta.get("width", reader.width)), int(meta.get("height", reader.height)),
                int(meta.get("sizeZ", 1)), int(meta.get("sizeT", 1))) and \
                reader.size_c == (len(meta.get("channels", [])) or reader.size_c)
            if same:
                self._pixels = twin
                return twin
            native_error = "qpsam reads the file with other dimensions than QuPath's server"
        except ImageReadError as exc:
            native_error = str(exc)
        if self._qupath_server() is not None:
            self._pixels = "qupath"
            return self._pixels
        if twin.image_path is None and twin.uri and self._project._builder_is_plain(self.server_builder):
            raise ImageReadError(f"entry {self.id} ({self.name!r}): image not found at {self.uri}; move it back "
                                 "or update the project's image paths with `qpsam relocate PROJECT --search FOLDER` (Python: Project.relocate)")
        raise ImageReadError(f"entry {self.id} ({self.name!r}): neither qpsam nor QuPath {self._project.qupath_text} "
                             f"can read {self.uri} here (qpsam: {native_error}; QuPath: "
                             f"{getattr(self, '_server_error', 'no server')})")

    def read_region(self, region: Region, channels: Sequence[int] | None = None) -> np.ndarray:
        """Pixels (rows, cols, channels): qpsam's reader where it reads the file, else QuPath's server."""
        source = self._pixel_source()
        if isinstance(source, NativeEntry):
            return source.read_region(region, channels)
        J = _java()
        server = self._qupath_server()
        try:
            request = J.RegionRequest.createInstance(server.getPath(), float(region.downsample), int(region.x),
                                                     int(region.y), int(region.width), int(region.height),
                                                     int(region.plane.z), int(region.plane.t))
            image = server.readRegion(request)
            raster = image.getRaster()
            w, h, bands = int(raster.getWidth()), int(raster.getHeight()), int(raster.getNumBands())
            from jpype import JArray, JDouble

            samples = raster.getPixels(0, 0, w, h, JArray(JDouble)(w * h * bands))
            out = np.asarray(samples, dtype=np.float64).reshape(h, w, bands)
        except Exception as exc:  # noqa: BLE001 - Java exceptions
            raise ImageReadError(f"entry {self.id} ({self.name!r}): QuPath cannot read region {region} "
                                 f"({_java_message(exc)})") from None
        dtype = np.uint8 if bool(server.isRGB()) else np.dtype(str(server.getPixelType()).lower())
        out = out.astype(dtype)
        if channels is None and region.plane.c >= 0:
            channels = [region.plane.c]
        return out if channels is None else out[..., list(channels)]

    def read_rgb(self, region: Region, displays: Sequence[px.ChannelDisplay] | None = None) -> np.ndarray:
        source = self._pixel_source()
        if isinstance(source, NativeEntry):
            return source.read_rgb(region, displays)
        pixels = self.read_region(region)
        if self.is_rgb and pixels.shape[2] == 3 and displays is None:
            return pixels.astype(np.uint8)
        names = [c.name for c in self.channels] or [f"Channel {i + 1}" for i in range(pixels.shape[2])]
        shown = None
        if displays is None:
            saved = self.properties.get("qupath.lib.display.ImageDisplay")
            found = px.displays_from_property(saved, names)
            if found is not None:
                displays, shown = found
        if displays is None:
            colors = [c.color or px.DEFAULT_COLORS[i % len(px.DEFAULT_COLORS)] for i, c in enumerate(self.channels)]
            displays = []
            for i in range(pixels.shape[2]):
                lo, hi = (float(v) for v in np.percentile(pixels[..., i], [0.1, 99.9]))
                displays.append(px.ChannelDisplay(names[i], tuple(colors[i]) if i < len(colors) else (255, 255, 255),
                                                  lo, max(hi, lo + 1)))
        return px.render_pixels(pixels, displays, shown)

    def close(self) -> None:
        if isinstance(self._pixels, NativeEntry):
            self._pixels.close()
        if self._server:
            try:
                self._server.close()
            except Exception:  # noqa: BLE001
                pass
        self._pixels = None
        self._server = None


def _shadow(folder: Path) -> Path:
    """A private folder that QuPath can load the project from without touching ``folder``: a copy of
    ``project.qpproj`` and ``classifiers/classes.json``, links to everything else."""
    tmp = Path(tempfile.mkdtemp(prefix="qpsam-paquo-"))
    shutil.copy2(folder / pj.PROJECT_FILE, tmp / pj.PROJECT_FILE)
    (tmp / "classifiers").mkdir()
    for item in folder.iterdir():
        if item.name in (pj.PROJECT_FILE, "classifiers"):
            continue
        (tmp / item.name).symlink_to(item, target_is_directory=item.is_dir())
    classes = folder / "classifiers" / "classes.json"
    if classes.is_file():
        shutil.copy2(classes, tmp / "classifiers" / "classes.json")
    return tmp


class PaquoProject:
    """A QuPath project opened through paquo (QuPath's own Java code).

    ``keep_version``: a project written by another QuPath version than the one paquo runs would take QuPath's
    version when saved. ``None`` (the default) refuses to open such a project for writing, naming both versions;
    ``True`` keeps the project's version; ``False`` lets QuPath's version stand.
    """

    backend = "paquo"

    def __init__(self, path: str | os.PathLike[str], mode: str = "r", *, version: str | None = None,
                 keep_version: bool | None = None, auto: bool = False, lock_timeout: float = 0.0) -> None:
        if mode not in MODES:
            raise ProjectError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.file = pj.project_file(path).absolute()
        self.path = self.file.parent
        self.mode = mode
        self._auto = auto
        self._lock = ProjectLock(self.file)
        self._shadow: Path | None = None
        self._twin: NativeProject | None = None
        self._entries: list[PaquoEntry] = []
        exists = self.file.exists()
        if mode in ("r", "r+") and not exists:
            raise ProjectError(f"{self.file}: no such project (use mode 'a', 'w' or 'x' to create one)")
        if mode == "x" and exists:
            raise ProjectError(f"{self.file}: the project already exists (mode 'x' only creates)")
        try:
            J = _java()
        except Exception as exc:  # noqa: BLE001 - JVM start-up
            raise ProjectError(f"{self.file}: cannot start QuPath through paquo ({_java_message(exc)})") from None
        self.qupath_text = qupath_version()
        self.qupath = pj._version(self.qupath_text)
        self._before = pj.read_json(self.file, "project file") if exists else None
        self._classes_before = self._read_classes()
        self._keep: str | None = None
        if mode != "r" and exists:
            old = str(self._before.get("version", "")) if isinstance(self._before, dict) else ""
            if old and old != self.qupath_text:
                if keep_version is None:
                    raise ProjectError(
                        f"{self.file}: the project is from QuPath {old}; saving it through paquo (QuPath "
                        f"{self.qupath_text}) would mark it as a QuPath {self.qupath_text} project, though its "
                        f"users may still run QuPath {old}. Keep {old} (keep_version=True, CLI --keep-version) "
                        f"or go on (keep_version=False, CLI --upgrade-version)")
                if keep_version:
                    self._keep = old
        if mode != "r":
            if not self.path.exists():
                try:
                    self.path.mkdir(parents=True)
                except OSError as exc:
                    raise ProjectError(f"{self.path}: cannot create the project folder ({exc.strerror or exc})") \
                        from None
            # (A lock that waits, ``lock_timeout``, where the native backend's lock offers it.)
            self._lock.acquire(**({"timeout": lock_timeout} if lock_timeout else {}))
        try:
            if mode == "w" and exists:
                truncate_project(self.path, keep=self._lock.path)
                exists = False
            if not exists:
                if any(p for p in self.path.iterdir() if p.name != self._lock.path.name):
                    raise ProjectError(f"{self.path}: a new project needs an empty folder (QuPath's rule)")
                # QuPath creates it (paquo refuses: our lock file is already in the folder).
                J.Projects.createProject(J.File(str(self.path)), J.BufferedImage).syncChanges()
                if version is not None and version != self.qupath_text:
                    self._keep = version
                    self._before = None
                    self._put_version_back()
            from paquo.projects import QuPathProject

            if mode == "r":
                self._shadow = _shadow(self.path)
                weakref.finalize(self, shutil.rmtree, str(self._shadow), True)
                self._project = QuPathProject(self._shadow / pj.PROJECT_FILE, mode="r")
            else:
                self._project = QuPathProject(self.file, mode="r+")
            self._entries = [PaquoEntry(self, e) for e in self._project.images]
        except ProjectError:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001 - paquo/Java errors
            self.close()
            raise ProjectError(f"{self.file}: QuPath {self.qupath_text} cannot open the project "
                               f"({_java_message(exc)})") from None

    def __enter__(self) -> "PaquoProject":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None and self.mode != "r":
                self.save()
        finally:
            self.close()

    def close(self) -> None:
        """Close images, release the writer's lock and remove mode 'r''s private copy (does not save)."""
        for entry in self._entries:
            entry.close()
        self._lock.release()
        if self._shadow is not None:
            shutil.rmtree(self._shadow, ignore_errors=True)
            self._shadow = None

    def __repr__(self) -> str:
        return f"<Project {self.file} ({len(self)} images, paquo, QuPath {self.qupath_text})>"

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise ProjectError(f"{self.file}: opened read-only (mode 'r'); open with mode 'r+' to change it")

    def _native_twin(self) -> NativeProject:
        """The project read by the native backend (read only: used for qpsam's own pixel readers)."""
        if self._twin is None:
            self._twin = NativeProject(self.path, "r") if self.file.exists() else None
        if self._twin is None:
            raise ImageReadError(f"{self.file}: the project file does not exist yet")
        return self._twin

    @staticmethod
    def _builder_is_plain(builder: Mapping[str, Any]) -> bool:
        return builder.get("builderType", "uri") == "uri"

    @property
    def version(self) -> str:
        return str(self._project.version)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def images(self) -> list[PaquoEntry]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[PaquoEntry]:
        return iter(list(self._entries))

    def entry(self, key: int | str) -> PaquoEntry:
        for entry in self._entries:
            if str(entry.id) == str(key).strip():
                return entry
        named = [e for e in self._entries if e.name == key]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise ProjectError(f"{self.file}: {len(named)} images are named {key!r}; use an id")
        raise ProjectError(f"{self.file}: no image with id or name {key!r}")

    @property
    def path_classes(self) -> list[PathClass]:
        return [PathClass(str(c.name), tuple(c.color.to_rgb()) if c.color is not None else None)
                for c in self._project.path_classes]

    @path_classes.setter
    def path_classes(self, classes: Iterable[PathClass]) -> None:
        self._check_writable()
        from paquo.classes import QuPathPathClass

        self._project.path_classes = [QuPathPathClass(c.name, color=c.color[:3] if c.color else None)
                                      for c in classes]

    def relocate(self, mapping: Mapping[str, str] | Callable[[str], str | None]) -> int:
        self._check_writable()
        uri2uri = {}
        for entry in self._entries:
            uri = entry.uri
            if uri is None:
                continue
            # QuPath's ImageJ entries write file:///path, its other servers file:/path: both are matched.
            plain = "file:/" + uri[len("file:///"):] if uri.startswith("file:///") else uri
            if callable(mapping):
                new = mapping(uri)
            else:
                new = next((n + plain[len(o):] for o, n in mapping.items() if plain.startswith(o)), None)
            if new and new != uri:
                uri2uri[uri] = new
        if uri2uri:
            try:
                self._project.update_image_paths(uri2uri=uri2uri)
            except Exception as exc:  # noqa: BLE001
                raise ProjectError(f"{self.file}: QuPath cannot update the image paths ({_java_message(exc)})") \
                    from None
            for entry in self._entries:
                entry.close()
                entry._meta_cache = None
        return len(uri2uri)

    def add_image(self, image: str | os.PathLike[str], name: str | None = None, image_type: str | None = None,
                  series: int = 0, allow_duplicates: bool = False) -> PaquoEntry:
        self._check_writable()
        from paquo.images import QuPathImageType

        path = Path(image).absolute()
        if not path.is_file():
            raise ProjectError(f"{path}: image file not found")
        if image_type is not None and image_type not in IMAGE_TYPES:
            raise ProjectError(f"image type must be one of {', '.join(IMAGE_TYPES)}, got {image_type!r}")
        kind = QuPathImageType[image_type] if image_type else None
        try:
            entry = self._project.add_image(path, image_type=kind, allow_duplicates=allow_duplicates)
        except FileExistsError:
            raise ProjectError(f"{path}: the image is already in the project (allow_duplicates=True adds it "
                               "again)") from None
        except Exception as exc:  # noqa: BLE001
            if self._auto:
                return self._add_described_image(path, name, image_type, series)
            reason = _java_message(exc)
            if "no preferred support" in reason:
                reason = (f"none of QuPath {self.qupath_text}'s image servers here opens it (with the harness only "
                          "the ImageJ server: TIFFs that ImageJ reads)")
            raise ProjectError(f"{path}: QuPath cannot add the image ({reason})") from None
        if name:
            entry.image_name = name
        wrapped = PaquoEntry(self, entry)
        self._entries.append(wrapped)
        return wrapped

    def _add_described_image(self, path: Path, name: str | None, image_type: str | None,
                             series: int) -> PaquoEntry:
        """backend='auto': an image none of QuPath's servers here opens, but qpsam reads, is added with the server
        builder QuPath itself would write (Bio-Formats or OpenSlide, with qpsam's metadata), as the native backend
        adds it; a QuPath with that server opens it."""
        from jpype import JClass
        from paquo.images import QuPathProjectImageEntry

        from .native import _BIOFORMATS, _OPENSLIDE

        J = _java()
        try:
            reader = px.open_image(path, series)
        except ImageReadError as exc:
            raise ProjectError(f"{path}: neither QuPath {self.qupath_text} nor qpsam can open the image ({exc})") \
                from None
        try:
            metadata, rgb, size_c = reader.qupath_metadata(), reader.is_rgb, reader.size_c
        finally:
            reader.close()
        provider = _OPENSLIDE if path.suffix.lower() in (".svs", ".ndpi", ".mrxs", ".scn") else _BIOFORMATS
        builder = {"builderType": "uri", "providerClassName": provider, "uri": pj.path_to_uri(path),
                   "args": ["--series", str(series)] if provider == _BIOFORMATS else [], "metadata": metadata}
        kind = JClass("qupath.lib.images.servers.ImageServerBuilder$ServerBuilder")
        try:
            jbuilder = J.GsonTools.getInstance().fromJson(json.dumps(builder), kind)
            jentry = self._project.java_object.addImage(jbuilder)
            jentry.setImageName(name or path.name)
        except Exception as exc:  # noqa: BLE001
            raise ProjectError(f"{path}: QuPath cannot add the image ({_java_message(exc)})") from None
        self._project._image_entries_proxy.refresh()
        entry = PaquoEntry(self, QuPathProjectImageEntry(jentry, _project_ref=self._project))
        entry.data_dir.mkdir(parents=True, exist_ok=True)
        pj.write_json(entry.data_dir / "server.json", builder)
        entry._image_type = image_type or ("FLUORESCENCE" if not rgb and size_c > 1 else "UNSET")
        self._entries.append(entry)
        return entry

    def remove_image(self, entry: PaquoEntry | int | str, delete_data: bool = True) -> None:
        self._check_writable()
        entry = entry if isinstance(entry, PaquoEntry) else self.entry(entry)
        self._project.java_object.removeImage(entry._java, False)
        if delete_data:
            shutil.rmtree(entry.data_dir, ignore_errors=True)
        entry.close()
        self._entries.remove(entry)

    @property
    def is_changed(self) -> bool:
        return any(e.is_changed for e in self._entries)

    def save(self) -> None:
        """Save changed entries, then ``project.qpproj`` (fields QuPath does not know are put back)."""
        self._check_writable()
        for entry in self._entries:
            entry.save()
        try:
            self._project.java_object.syncChanges()
        except Exception as exc:  # noqa: BLE001
            raise ProjectError(f"{self.file}: QuPath could not write the project file ({_java_message(exc)})") \
                from None
        self._restore_unknown_fields()
        self._restore_unknown_class_fields()
        self._put_version_back()
        self._twin = None

    @property
    def _classes_file(self) -> Path:
        return self.path / "classifiers" / "classes.json"

    def _read_classes(self) -> dict[str, Any] | None:
        try:
            data = pj.read_json(self._classes_file, "class list") if self._classes_file.is_file() else None
        except ProjectError:
            return None
        return data if isinstance(data, dict) else None

    def _restore_unknown_class_fields(self) -> None:
        """Put back the ``classes.json`` fields QuPath dropped when it rewrote the class list."""
        before, after = self._classes_before, self._read_classes()
        if before is None or after is None:
            self._classes_before = after
            return
        changed = False
        for key, value in before.items():
            if key not in after:
                after[key] = value
                changed = True
        old = {c.get("name"): c for c in before.get("pathClasses", []) if isinstance(c, dict)}
        for item in after.get("pathClasses", []):
            for key, value in old.get(item.get("name"), {}).items() if isinstance(item, dict) else ():
                if key not in item:
                    item[key] = value
                    changed = True
        if changed:
            pj.write_json(self._classes_file, after)
        self._classes_before = after

    def _put_version_back(self) -> None:
        if self._keep is None or not self.file.exists():
            return
        data = pj.read_json(self.file, "project file")
        if isinstance(data, dict) and data.get("version") != self._keep:
            data["version"] = self._keep
            pj.write_json(self.file, data)

    def _restore_unknown_fields(self) -> None:
        """Put back the project-file fields QuPath dropped when it rewrote ``project.qpproj``."""
        if not isinstance(self._before, dict) or not self.file.exists():
            self._before = pj.read_json(self.file, "project file") if self.file.exists() else None
            return
        after = pj.read_json(self.file, "project file")
        changed = False
        for key, value in self._before.items():
            if key not in after:
                after[key] = value
                changed = True
        old_entries = {e.get("entryID"): e for e in self._before.get("images", []) if isinstance(e, dict)}
        for entry in after.get("images", []):
            old = old_entries.get(entry.get("entryID"))
            if not old:
                continue
            for key, value in old.items():
                if key not in entry:
                    entry[key] = value
                    changed = True
            builder, old_builder = entry.get("serverBuilder"), old.get("serverBuilder")
            if isinstance(builder, dict) and isinstance(old_builder, dict):
                for key, value in old_builder.items():
                    if key not in builder:
                        builder[key] = value
                        changed = True
        if changed:
            pj.write_json(self.file, after)
        self._before = json.loads(json.dumps(after))
