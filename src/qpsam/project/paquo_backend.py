"""The paquo backend: the same project interface over QuPath itself (paquo + JPype).

Used when paquo is installed and finds a QuPath installation (``pip install 'qpsam[paquo]'``, then QuPath in a
standard place or ``PAQUO_QUPATH_DIR``). Objects travel between QuPath and qpsam's object model as JTS WKB
geometries (doubles, no rounding) with the image plane carried explicitly; pixels are read with QuPath's own
``ImageServer.readRegion``.

paquo's traps and what this module does about them:

* paquo's ``save()`` silently skips an entry whose image file cannot be reached. Here such an entry's hierarchy is
  written with qpsam's native ``data.qpdata`` writer instead (with a warning), so changes are never dropped.
* shapely geometries handed to paquo land on the default plane, and ROIs read through paquo lose theirs. Here ROIs
  are built with ``GeometryTools.geometryToROI(geometry, plane)`` and read back with their c/z/t.
* QuPath rewrites ``project.qpproj`` from its own model, dropping fields it does not know; they are merged back
  after every save.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from qpsam.errors import ImageReadError, ProjectError
from qpsam.geometry import Region
from qpsam.objects import ImagePlane, ObjectType, PathClass, PathObject, walk

from . import hierarchy as hy
from . import pixels as px
from . import qpproj as pj
from .native import IMAGE_TYPES, MODES, ProjectLock, truncate_project
from .qpdata import new_qpdata, read_qpdata, summarize, write_qpdata

__all__ = ["available", "unavailable_reason", "PaquoProject", "PaquoEntry"]

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


def _java() -> Any:
    """QuPath's Java classes (starts the JVM through paquo on first use)."""
    import paquo.java  # noqa: F401 - starts the JVM
    from jpype import JClass

    class J:
        ImagePlane = JClass("qupath.lib.regions.ImagePlane")
        RegionRequest = JClass("qupath.lib.regions.RegionRequest")
        ROIs = JClass("qupath.lib.roi.ROIs")
        GeometryTools = JClass("qupath.lib.roi.GeometryTools")
        PathObjects = JClass("qupath.lib.objects.PathObjects")
        PathClass = JClass("qupath.lib.objects.classes.PathClass")
        UUID = JClass("java.util.UUID")
        Integer = JClass("java.lang.Integer")
        ArrayList = JClass("java.util.ArrayList")
        WKBReader = JClass("org.locationtech.jts.io.WKBReader")
        WKBWriter = JClass("org.locationtech.jts.io.WKBWriter")

    return J


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
    import shapely

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


def _to_java(J: Any, obj: PathObject) -> Any:
    roi = _roi(J, obj.geometry, obj.plane, obj.ellipse)
    pc = None
    if obj.path_class is not None:
        color = None if obj.path_class.color is None else J.Integer(_packed(obj.path_class.color))
        pc = J.PathClass.fromString(obj.path_class.name, color) if color is not None else \
            J.PathClass.fromString(obj.path_class.name)
    if obj.object_type is ObjectType.ANNOTATION:
        java = J.PathObjects.createAnnotationObject(roi, pc)
    elif obj.object_type is ObjectType.DETECTION:
        java = J.PathObjects.createDetectionObject(roi, pc)
    elif obj.object_type is ObjectType.TILE:
        java = J.PathObjects.createTileObject(roi, pc, None)
    elif obj.object_type is ObjectType.CELL:
        nucleus = None if obj.nucleus is None else _roi(J, obj.nucleus, obj.plane, False)
        java = J.PathObjects.createCellObject(roi, nucleus, pc, None)
    else:
        raise ProjectError(f"object {obj.id}: the paquo backend cannot create {obj.object_type.value} objects")
    java.setId(J.UUID.fromString(str(obj.id)))
    if obj.name is not None:
        java.setName(obj.name)
    if obj.color is not None:
        java.setColor(J.Integer(_packed(obj.color)))
    if obj.locked:
        java.setLocked(True)
    if obj.measurements:
        ml = java.getMeasurementList()
        for name, value in obj.measurements.items():
            ml.put(name, float(value))
        ml.close()
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


# ------------------------------------------------------------------------------------------------------------


class PaquoEntry:
    """An image entry backed by paquo's ``QuPathProjectImageEntry`` (same interface as the native entry)."""

    def __init__(self, project: "PaquoProject", entry: Any) -> None:
        self._project = project
        self._entry = entry
        self._objects: list[PathObject] | None = None
        self._loaded: tuple[PathObject, ...] = ()
        self._image_type: str | None = None

    def __repr__(self) -> str:
        return f"<ImageEntry {self.id}: {self.name!r} (paquo)>"

    @property
    def id(self) -> int:
        return int(self._entry.entry_id)

    @property
    def name(self) -> str:
        return str(self._entry.image_name)

    @name.setter
    def name(self, value: str) -> None:
        self._project._check_writable()
        self._entry.image_name = value

    @property
    def description(self) -> str | None:
        return self._entry.description or None

    @description.setter
    def description(self, value: str | None) -> None:
        self._project._check_writable()
        self._entry.description = value or ""

    @property
    def metadata(self) -> Any:
        """The entry's metadata (a live mapping: changes apply at once)."""
        return self._entry.metadata

    @property
    def tags(self) -> list[str]:
        return []

    @property
    def uri(self) -> str | None:
        try:
            return str(self._entry.uri)
        except Exception:  # noqa: BLE001 - entries without a single URI
            return None

    @property
    def data_dir(self) -> Path:
        return Path(self._entry.entry_path)

    @property
    def image_path(self) -> Path | None:
        uri = self.uri
        path = pj.uri_to_path(uri) if uri else None
        return path if path is not None and path.exists() else None

    def _meta(self) -> dict[str, Any]:
        path = self.data_dir / "server.json"
        if path.exists():
            meta = pj.builder_metadata(pj.read_json(path, "server description"))
            if meta:
                return meta
        return {"width": self._entry.width, "height": self._entry.height, "sizeZ": self._entry.num_z_slices,
                "sizeT": self._entry.num_timepoints, "channels": [{} for _ in range(self._entry.num_channels)],
                "levels": self._entry.downsample_levels}

    width = property(lambda self: int(self._entry.width))
    height = property(lambda self: int(self._entry.height))
    n_channels = property(lambda self: int(self._entry.num_channels))
    size_z = property(lambda self: int(self._entry.num_z_slices))
    size_t = property(lambda self: int(self._entry.num_timepoints))

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
        return [float(level["downsample"]) for level in self._entry.downsample_levels]

    @property
    def pixel_size(self) -> tuple[float, float] | None:
        cal = self._meta().get("pixelCalibration", {})
        pw, ph = cal.get("pixelWidth", {}), cal.get("pixelHeight", {})
        if pw.get("unit") in ("µm", "um") and ph.get("unit") in ("µm", "um"):
            return float(pw["value"]), float(ph["value"])
        return None

    @property
    def image_type(self) -> str | None:
        if self._image_type is not None:
            return self._image_type
        return str(self._entry.image_type.name)

    @image_type.setter
    def image_type(self, value: str | None) -> None:
        self._project._check_writable()
        if value not in IMAGE_TYPES:
            raise ProjectError(f"image type must be one of {', '.join(IMAGE_TYPES)}, got {value!r}")
        from paquo.images import QuPathImageType

        self._entry.image_type = QuPathImageType[value]
        self._image_type = value

    @property
    def properties(self) -> Any:
        return self._entry.properties

    # -- hierarchy ----------------------------------------------------------------------------------------
    def _tree(self) -> list[PathObject]:
        if self._objects is None:
            J = _java()
            try:
                root = self._entry.hierarchy.java_object.getRootObject()
                self._objects = [_from_java(J, c) for c in root.getChildObjectsAsArray()]
            except Exception as exc:  # noqa: BLE001 - Java exceptions for unreadable data
                raise ProjectError(f"entry {self.id} ({self.name}): cannot read its objects through QuPath "
                                   f"({exc})") from exc
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
        return self._objects is not None and tuple(self._objects) != self._loaded or self._image_type is not None

    def save(self) -> None:
        """Save through QuPath; when QuPath cannot reach the image (paquo would skip silently), write the
        hierarchy with qpsam's native writer instead."""
        self._project._check_writable()
        if not self.is_changed:
            return
        objects = self._tree()
        if self._entry.is_readable():
            J = _java()
            hierarchy = self._entry.hierarchy.java_object
            root = hierarchy.getRootObject()
            hierarchy.clearAll()
            children = J.ArrayList()
            for obj in objects:
                children.add(_to_java(J, obj))
            root.addChildObjects(children)
            hierarchy.fireHierarchyChangedEvent(root)
            self._entry.save()
            saved = self._entry.java_object.readHierarchy()
            if int(saved.nObjects()) != len(list(walk(objects))):
                raise ProjectError(f"entry {self.id} ({self.name}): QuPath saved {int(saved.nObjects())} objects, "
                                   f"expected {len(list(walk(objects)))}")
        else:
            _log.warning("image of entry %s (%s) is unreachable at %s: paquo would not save it; writing "
                         "data.qpdata with qpsam's native writer", self.id, self.name, self.uri)
            data_file = self.data_dir / "data.qpdata"
            data = read_qpdata(data_file) if data_file.exists() else new_qpdata(
                None, self._image_type or "UNSET", self._project.version, f"{self._project.file}::{self.id}")
            data.objects = list(objects)
            if self._image_type is not None:
                data.image_type = self._image_type
            meta = self._meta()
            write_qpdata(data_file, data, summary={
                "width": meta.get("width", 0), "height": meta.get("height", 0),
                "sizeC": len(meta.get("channels", [])) or 1, "sizeZ": meta.get("sizeZ", 1),
                "sizeT": meta.get("sizeT", 1)})
        self._loaded = tuple(objects)
        self._image_type = None

    # -- pixels ----------------------------------------------------------------------------------------------
    def read_region(self, region: Region, channels: Sequence[int] | None = None) -> np.ndarray:
        """Pixels (rows, cols, channels) read by QuPath's ImageServer."""
        if not self._entry.is_readable():
            raise ImageReadError(f"entry {self.id} ({self.name!r}): image not found at {self.uri}; move it back "
                                 "or update the project's image paths with `qpsam relocate PROJECT --search FOLDER` (Python: Project.relocate)")
        J = _java()
        server = self._entry._image_server
        request = J.RegionRequest.createInstance(server.getPath(), float(region.downsample), int(region.x),
                                                 int(region.y), int(region.width), int(region.height),
                                                 int(region.plane.z), int(region.plane.t))
        image = server.readRegion(request)
        raster = image.getRaster()
        w, h, bands = int(raster.getWidth()), int(raster.getHeight()), int(raster.getNumBands())
        out = np.stack([np.asarray(raster.getSamples(0, 0, w, h, b, None), dtype=np.float64).reshape(h, w)
                        for b in range(bands)], axis=-1)
        dtype = np.uint8 if bool(server.isRGB()) else np.dtype(str(server.getPixelType()).lower())
        out = out.astype(dtype)
        if channels is None and region.plane.c >= 0:
            channels = [region.plane.c]
        return out if channels is None else out[..., list(channels)]

    def read_rgb(self, region: Region, displays: Sequence[px.ChannelDisplay] | None = None) -> np.ndarray:
        pixels = self.read_region(region)
        if self.is_rgb and pixels.shape[2] == 3 and displays is None:
            return pixels.astype(np.uint8)
        names = [c.name for c in self.channels] or [f"Channel {i + 1}" for i in range(pixels.shape[2])]
        shown = None
        if displays is None:
            props = self.properties
            saved = props["qupath.lib.display.ImageDisplay"] if "qupath.lib.display.ImageDisplay" in props else None
            found = px.displays_from_property(None if saved is None else str(saved), names)
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
        pass


class PaquoProject:
    """A QuPath project opened through paquo (QuPath's own Java code)."""

    backend = "paquo"

    def __init__(self, path: str | os.PathLike[str], mode: str = "r", *, version: str | None = None) -> None:
        if mode not in MODES:
            raise ProjectError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.file = pj.project_file(path).absolute()
        self.path = self.file.parent
        self.mode = mode
        self._lock = ProjectLock(self.file)
        exists = self.file.exists()
        if mode in ("r", "r+") and not exists:
            raise ProjectError(f"{self.file}: no such project (use mode 'a', 'w' or 'x' to create one)")
        if mode == "x" and exists:
            raise ProjectError(f"{self.file}: the project already exists (mode 'x' only creates)")
        if mode != "r":
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        try:
            if mode == "w" and exists:
                # Truncate as the native backend does (zip beside the folder first), then create.
                truncate_project(self.path, keep=self._lock.path)
            self._before = pj.read_json(self.file, "project file") if self.file.exists() else None
            from paquo.projects import QuPathProject

            paquo_mode = {"r": "r", "r+": "r+", "a": "a", "w": "a", "x": "a"}[mode]
            self._project = QuPathProject(self.path, mode=paquo_mode)
            if not self.file.exists():
                self._project.save()
            self._entries = [PaquoEntry(self, e) for e in self._project.images]
        except ProjectError:
            self._lock.release()
            raise
        except Exception as exc:  # noqa: BLE001 - paquo/Java errors
            self._lock.release()
            raise ProjectError(f"{self.file}: paquo cannot open the project ({exc})") from exc

    def __enter__(self) -> "PaquoProject":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None and self.mode != "r":
                self.save()
        finally:
            self.close()

    def close(self) -> None:
        self._lock.release()

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise ProjectError(f"{self.file}: opened read-only (mode 'r'); open with mode 'r+' to change it")

    @property
    def version(self) -> str:
        return str(self._project.version)

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
            if callable(mapping):
                new = mapping(uri)
            else:
                new = next((n + uri[len(o):] for o, n in mapping.items() if uri.startswith(o)), None)
            if new and new != uri:
                uri2uri[uri] = new
        if uri2uri:
            self._project.update_image_paths(uri2uri=uri2uri)
        return len(uri2uri)

    def add_image(self, image: str | os.PathLike[str], name: str | None = None, image_type: str | None = None,
                  series: int = 0, allow_duplicates: bool = False) -> PaquoEntry:
        self._check_writable()
        from paquo.images import QuPathImageType

        path = Path(image).absolute()
        if not path.is_file():
            raise ProjectError(f"{path}: image file not found")
        kind = QuPathImageType[image_type] if image_type else None
        try:
            entry = self._project.add_image(path, image_type=kind, allow_duplicates=allow_duplicates)
        except Exception as exc:  # noqa: BLE001
            raise ProjectError(f"{path}: QuPath cannot add the image ({exc})") from exc
        if name:
            entry.image_name = name
        wrapped = PaquoEntry(self, entry)
        self._entries.append(wrapped)
        return wrapped

    def remove_image(self, entry: PaquoEntry | int | str, delete_data: bool = True) -> None:
        self._check_writable()
        entry = entry if isinstance(entry, PaquoEntry) else self.entry(entry)
        self._project.remove_image(entry._entry)
        self._entries.remove(entry)

    @property
    def is_changed(self) -> bool:
        return any(e.is_changed for e in self._entries)

    def save(self) -> None:
        self._check_writable()
        for entry in self._entries:
            entry.save()
        self._project.save(images=False)
        self._restore_unknown_fields()

    def _restore_unknown_fields(self) -> None:
        """Put back the project-file fields QuPath dropped when it rewrote ``project.qpproj``."""
        if not isinstance(self._before, dict) or not self.file.exists():
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
