"""The native project backend: QuPath projects in pure Python (no Java).

``project.qpproj`` and the other JSON files through :mod:`.qpproj`, object hierarchies through :mod:`.qpdata`,
pixels through :mod:`.pixels`. Writers hold a lock file (``project.qpproj.lock``) so that two qpsam processes do
not write one project at once; QuPath itself does not expect two writers either.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from qpsam.errors import DataWarning, ImageReadError, ProjectError
from qpsam.fileio import atomic_write, remove_leftovers
from qpsam.filelock import FileLock
from qpsam.geometry import Region
from qpsam.objects import PathClass, PathObject, walk

from . import hierarchy as hy
from . import pixels as px
from . import qpproj as pj
from . import transforms as tf
from .qpdata import QpData, new_qpdata, read_qpdata, summarize, summary_json, write_qpdata
from .sanity import ImageLimits, describe_problems, object_problems

__all__ = ["NativeProject", "NativeEntry", "ProjectLock", "MODES"]

MODES = ("r", "r+", "a", "w", "x")
IMAGE_TYPES = ("BRIGHTFIELD_H_DAB", "BRIGHTFIELD_H_E", "BRIGHTFIELD_OTHER", "FLUORESCENCE", "OTHER", "UNSET")
_BIOFORMATS = "qupath.lib.images.servers.bioformats.BioFormatsServerBuilder"
_OPENSLIDE = "qupath.lib.images.servers.openslide.OpenslideServerBuilder"


# ------------------------------------------------------------------------------------------------------------
# Lock file


class ProjectLock:
    """The writer's lock on a project: ``project.qpproj.lock``, an OS advisory lock held until :meth:`release`
    (see :mod:`qpsam.filelock`), so a lock left by a killed process or a full disk never blocks anyone.

    Taking it also removes temporary files that interrupted writes left in the project (they predate the lock,
    so no live writer owns them)."""

    def __init__(self, project_file: Path) -> None:
        self.project_file = project_file
        self.path = project_file.with_name(project_file.name + ".lock")
        self._lock = FileLock(self.path, self._refusal)

    @staticmethod
    def _refusal(holder: Mapping[str, Any] | None, path: Path) -> str:
        who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
        return (f"{path.parent / pj.PROJECT_FILE}: the project is open for writing by {who} "
                f"(lock file {path}); close it there, or delete the lock file if that process is gone")

    @property
    def held(self) -> bool:
        return self._lock.held

    def acquire(self, timeout: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for another writer to finish."""
        self._lock.acquire(timeout)
        since = self._lock.acquired_at or time.time()
        folder = self.path.parent
        data = folder / "data"
        try:
            entry_dirs = [Path(d.path) for d in os.scandir(data) if d.is_dir()] if data.is_dir() else []
        except OSError:
            entry_dirs = []
        remove_leftovers([folder, folder / "classifiers", *entry_dirs], older_than=since)

    def release(self) -> None:
        self._lock.release()


# ------------------------------------------------------------------------------------------------------------
# Entries


def _unpack_rgb(value: Any) -> tuple[int, int, int] | None:
    if not isinstance(value, int):
        return None
    packed = value & 0xFFFFFFFF
    return ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)


class NativeEntry:
    """One image of a project: its metadata, its objects (hierarchy) and its pixels."""

    def __init__(self, project: "NativeProject", data: dict[str, Any]) -> None:
        self._project = project
        self._json = data
        self._qpdata: QpData | None = None
        self._loaded: tuple[PathObject, ...] | None = None
        self._reader: px.ImageReader | None = None

    # -- identity and metadata ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<ImageEntry {self.id}: {self.name!r}>"

    @property
    def id(self) -> int:
        return int(self._json.get("entryID"))

    @property
    def name(self) -> str:
        return str(self._json.get("imageName", ""))

    @name.setter
    def name(self, value: str) -> None:
        self._project._check_writable()
        self._json["imageName"] = str(value)

    @property
    def description(self) -> str | None:
        return self._json.get("description")

    @description.setter
    def description(self, value: str | None) -> None:
        self._project._check_writable()
        if value is None:
            self._json.pop("description", None)
        else:
            self._json["description"] = str(value)

    @property
    def metadata(self) -> dict[str, str]:
        """The entry's key-value metadata (stored in ``project.qpproj``); edit it in place, then save."""
        return self._json.setdefault("metadata", {})

    @property
    def tags(self) -> list[str]:
        """The entry's tags (QuPath 0.6+)."""
        return list(self._json.get("tags", []))

    @tags.setter
    def tags(self, values: Iterable[str]) -> None:
        self._project._check_writable()
        self._json["tags"] = [str(v) for v in values]

    @property
    def server_builder(self) -> dict[str, Any]:
        return self._json.get("serverBuilder", {})

    @property
    def uri(self) -> str | None:
        return pj.builder_uri(self.server_builder)

    @property
    def data_dir(self) -> Path:
        return self._project.path / "data" / str(self.id)

    @property
    def image_path(self) -> Path | None:
        """The local image file, rebased on the project's folder when the project was moved (None if absent)."""
        uri = self.uri
        if uri is None:
            return None
        path = pj.uri_to_path(uri)
        if path is None:
            return None
        if path.exists():
            return path
        moved = self._project._rebase(path)
        return moved if moved is not None and moved.exists() else None

    def _metadata_block(self) -> dict[str, Any]:
        meta = pj.builder_metadata(self.server_builder)
        if meta is None:
            server_json = self.data_dir / "server.json"
            if server_json.exists():
                meta = pj.builder_metadata(pj.read_json(server_json, "server description"))
        if meta is None:
            meta = self.reader().qupath_metadata()
        return meta

    @property
    def width(self) -> int:
        return int(self._metadata_block().get("width", 0))

    @property
    def height(self) -> int:
        return int(self._metadata_block().get("height", 0))

    @property
    def channels(self) -> list[px.ChannelInfo]:
        meta = self._metadata_block()
        return [px.ChannelInfo(str(c.get("name", f"Channel {i + 1}")), _unpack_rgb(c.get("color")))
                for i, c in enumerate(meta.get("channels", []))]

    @property
    def n_channels(self) -> int:
        return len(self._metadata_block().get("channels", [])) or 1

    @property
    def size_z(self) -> int:
        return int(self._metadata_block().get("sizeZ", 1))

    @property
    def size_t(self) -> int:
        return int(self._metadata_block().get("sizeT", 1))

    @property
    def pixel_type(self) -> str | None:
        return self._metadata_block().get("pixelType")

    @property
    def is_rgb(self) -> bool:
        return bool(self._metadata_block().get("isRGB", False))

    @property
    def downsamples(self) -> list[float]:
        return [float(level.get("downsample", 1.0)) for level in self._metadata_block().get("levels", [])] or [1.0]

    @property
    def pixel_size(self) -> tuple[float, float] | None:
        """(width, height) of a pixel in micrometres, or None when the image is not calibrated."""
        cal = self._metadata_block().get("pixelCalibration", {})
        pw, ph = cal.get("pixelWidth", {}), cal.get("pixelHeight", {})
        if pw.get("unit") in ("µm", "um", "microns") and ph.get("unit") in ("µm", "um", "microns"):
            return float(pw.get("value")), float(ph.get("value"))
        return None

    # -- hierarchy ----------------------------------------------------------------------------------------
    @property
    def data_file(self) -> Path:
        return self.data_dir / "data.qpdata"

    def _data(self) -> QpData:
        if self._qpdata is None:
            if self.data_file.exists():
                self._qpdata = read_qpdata(self.data_file)
                problems = self.problems(self._qpdata.objects)
                if problems:
                    warnings.warn(f"{self.data_file}: {len(problems)} object(s) hold values the image cannot have, "
                                  f"so the file may be damaged (writing it is refused): "
                                  f"{describe_problems(problems)}", DataWarning, stacklevel=3)
            else:
                self._qpdata = new_qpdata(
                    self.server_builder, self._summary().get("imageType") or "UNSET", self._project.version,
                    f"{self._project.file.absolute()}::{self.id}")
            self._loaded = tuple(self._qpdata.objects)
        return self._qpdata

    def limits(self) -> ImageLimits:
        """What the image allows (size, slices, time points, channels), from its metadata; unknowns are None."""
        try:
            meta = self._metadata_block()
        except (ImageReadError, ProjectError):
            return ImageLimits()

        def count(key: str) -> int | None:
            value = meta.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

        channels = meta.get("channels")
        return ImageLimits(count("width"), count("height"), count("sizeZ") or 1, count("sizeT") or 1,
                           len(channels) if isinstance(channels, list) and channels else None)

    def problems(self, objects: Sequence[PathObject] | None = None) -> list[str]:
        """Objects (default: the hierarchy) that this image cannot hold; see :mod:`qpsam.project.sanity`."""
        return object_problems(self._data().objects if objects is None else objects, self.limits())

    def _summary(self) -> dict[str, Any]:
        path = self.data_dir / "summary.json"
        if not path.exists():
            return {}
        try:
            data = pj.read_json(path, "summary")
        except ProjectError:
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def image_type(self) -> str | None:
        return self._data().image_type

    @image_type.setter
    def image_type(self, value: str | None) -> None:
        self._project._check_writable()
        if value is not None and value not in IMAGE_TYPES:
            raise ProjectError(f"image type must be one of {', '.join(IMAGE_TYPES)}, got {value!r}")
        self._data().image_type = value

    @property
    def properties(self) -> dict[str, Any]:
        """The image's properties stored in ``data.qpdata`` (edit in place, then save)."""
        return self._data().properties

    @property
    def objects(self) -> list[PathObject]:
        """The hierarchy: the root's children (each with its own children)."""
        return list(self._data().objects)

    def all_objects(self) -> list[PathObject]:
        """Every object of the hierarchy, depth first."""
        return list(walk(self._data().objects))

    def set_objects(self, objects: Iterable[PathObject]) -> None:
        """Replace the whole hierarchy."""
        self._project._check_writable()
        objects = list(objects)
        self._edit(lambda tree: (hy.check_objects(objects), objects)[1])

    def add_objects(self, objects: Iterable[PathObject], parent: PathObject | uuid.UUID | None = None) -> None:
        """Add objects at the top level, or as children of ``parent`` (an object or id in the hierarchy).

        Objects are placed where they are put: unlike QuPath's ``insertObjects`` nothing is re-nested by
        location."""
        self._project._check_writable()
        objects = list(objects)
        self._edit(lambda tree: hy.add_objects(tree, objects, parent))

    def remove_objects(self, objects: Iterable[PathObject | uuid.UUID | str], keep_children: bool = False) -> int:
        """Remove objects (by object or id) wherever they are; their descendants go too unless
        ``keep_children`` (then they move up to the removed object's parent). Returns how many were removed."""
        self._project._check_writable()
        objects = list(objects)
        self._edit(lambda tree: hy.remove_objects(tree, objects, keep_children))
        return len({o.id if isinstance(o, PathObject) else str(o) for o in objects})

    def replace_objects(self, objects: Iterable[PathObject]) -> None:
        """Replace objects by new versions with the same ids, in place. An object given without children keeps
        the children of the one it replaces."""
        self._project._check_writable()
        objects = list(objects)
        self._edit(lambda tree: hy.replace_objects(tree, objects))

    def _edit(self, change: Callable[[list[PathObject]], list[PathObject]]) -> None:
        data = self._data()
        try:
            data.objects = change(list(data.objects))
        except ProjectError as exc:
            raise ProjectError(f"entry {self.id} ({self.name}): {exc}") from None

    def counts(self) -> dict[str, Any]:
        """Object counts by type and by class (the ``hierarchy`` block of QuPath's ``summary.json``)."""
        return summarize(self._data().objects)

    @property
    def is_changed(self) -> bool:
        if self._qpdata is None:
            return False
        data = self._qpdata
        if tuple(data.objects) != self._loaded:
            return True
        if data.image_type != data._image_type_read:
            return True
        return data._properties_read is not None and data.properties != data._properties_read

    def commit(self, run_key: str, records: Sequence[Any], added: Sequence[PathObject] = (),
               removed: Sequence[Any] = ()) -> None:
        """One job's change on this image: journal, edit, verified save, history (:mod:`qpsam.project.commit`)."""
        from .commit import commit

        commit(self, self._project.path, run_key, records, added, removed)

    def save(self) -> None:
        """Write this entry's hierarchy (``data.qpdata``, backup, ``summary.json``) if it changed."""
        self._project._check_writable()
        if not self.is_changed:
            return
        data = self._data()
        problems = self.problems(data.objects)
        if problems:
            raise ProjectError(f"{self.data_file}: refusing to write image {self.id} ({self.name}): "
                               f"{len(problems)} object(s) it cannot hold: {describe_problems(problems)}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        server_json = self.data_dir / "server.json"
        if not server_json.exists() and self.server_builder:
            pj.write_json(server_json, self.server_builder)
        colors = {pc.name: pc.color for pc in self._project.path_classes if pc.color is not None}
        back = write_qpdata(self.data_file, data, summary=self._server_summary(), class_colors=colors)
        self._qpdata = back
        self._loaded = tuple(back.objects)

    def _repair_summary(self) -> bool:
        """Rewrite ``summary.json`` when a save killed between its two renames left it older than ``data.qpdata``
        with other counts (QuPath's project list shows those counts). True when it was rewritten."""
        summary_file = self.data_dir / "summary.json"
        try:
            data_time = os.stat(self.data_file).st_mtime_ns
        except OSError:
            return False
        try:
            summary_time = os.stat(summary_file).st_mtime_ns
        except OSError:
            summary_time = -1
        if summary_time >= data_time:
            return False
        try:
            data = self._data()
        except ProjectError:
            return False  # a damaged data file is reported when it is used, not when the project opens
        current = self._summary()
        if summary_time >= 0 and current.get("hierarchy") == summarize(data.objects):
            os.utime(summary_file)  # agrees: do not check it again
            return False
        server = current.get("server") if isinstance(current.get("server"), dict) else self._server_summary()
        atomic_write(summary_file, summary_json(data, server))
        return True

    def _server_summary(self) -> dict[str, Any]:
        try:
            meta = self._metadata_block()
        except ImageReadError:
            meta = {}
        return {"width": meta.get("width", 0), "height": meta.get("height", 0),
                "sizeC": len(meta.get("channels", [])) or 1, "sizeZ": meta.get("sizeZ", 1),
                "sizeT": meta.get("sizeT", 1)}

    # -- pixels -------------------------------------------------------------------------------------------------
    def reader(self) -> px.ImageReader | tf.TransformedReader:
        """The open image (kept open until :meth:`close`), seen through the entry's rotation, flip or crop."""
        if self._reader is None:
            try:
                image_builder, transforms = tf.parse_builder(self.server_builder)
            except ImageReadError as exc:
                raise ImageReadError(f"entry {self.id} ({self.name!r}): {exc}") from None
            uri = self.uri
            path = self.image_path
            if path is None:
                raise ImageReadError(
                    f"entry {self.id} ({self.name!r}): image not found at {uri}; move it back or update the "
                    "project's image paths with `qpsam relocate PROJECT --search FOLDER` (Python: Project.relocate)")
            try:
                self._reader = tf.wrap(px.open_image(path, _builder_series(image_builder)), transforms)
            except ImageReadError as exc:
                raise ImageReadError(f"entry {self.id} ({self.name!r}), {uri}: {exc}") from exc
        return self._reader

    def read_region(self, region: Region, channels: Sequence[int] | None = None) -> np.ndarray:
        """Pixels (rows, cols, channels) of a region, read like QuPath (pyramid level, resizing); a region on
        one channel (``plane.c >= 0``) reads that channel unless ``channels`` says otherwise."""
        if channels is None and region.plane.c >= 0:
            channels = [region.plane.c]
        reader = self.reader()
        try:
            return reader.read_region(region, channels)
        except ImageReadError as exc:
            raise ImageReadError(f"entry {self.id} ({self.name!r}): {exc}") from exc

    def read_rgb(self, region: Region, displays: Sequence[px.ChannelDisplay] | None = None) -> np.ndarray:
        """An 8-bit RGB view of a region: RGB images as they are, others rendered with channel colours and
        display ranges (``displays``, else QuPath's saved display settings for the image, else defaults)."""
        reader = self.reader()
        shown = None
        if displays is None and not reader.is_rgb:
            try:
                saved = self.properties.get("qupath.lib.display.ImageDisplay")
            except ProjectError:
                saved = None
            found = px.displays_from_property(saved, reader.channel_names)
            if found is not None:
                displays, shown = found
        try:
            return reader.render_rgb(region, displays, shown)
        except ImageReadError as exc:
            raise ImageReadError(f"entry {self.id} ({self.name!r}): {exc}") from exc

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


# ------------------------------------------------------------------------------------------------------------
# Projects


class NativeProject:
    """A QuPath project opened in pure Python. Use :func:`qpsam.project.open_project` to get one."""

    backend = "native"

    def __init__(self, path: str | os.PathLike[str], mode: str = "r", *, version: str = pj.DEFAULT_VERSION,
                 lock_timeout: float = 0.0) -> None:
        if mode not in MODES:
            raise ProjectError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.file = pj.project_file(path).absolute()
        self.path = self.file.parent
        self.mode = mode
        self._lock = ProjectLock(self.file)
        self._entries: list[NativeEntry] = []
        self._classes: list[PathClass] | None = None
        self._classes_json: dict[str, Any] | None = None
        self._classes_changed = False
        self._closed = False
        exists = self.file.exists()
        folder_existed = self.path.exists()
        if mode in ("r", "r+") and not exists:
            raise ProjectError(f"{self.file}: no such project (use mode 'a', 'w' or 'x' to create one)")
        if mode == "x" and exists:
            raise ProjectError(f"{self.file}: the project already exists (mode 'x' only creates)")
        if mode != "r":
            if not self.path.exists():
                try:
                    self.path.mkdir(parents=True)
                except OSError as exc:
                    raise ProjectError(f"{self.path}: cannot create the project folder ({exc.strerror or exc})") \
                        from exc
            self._lock.acquire(lock_timeout)
        try:
            if mode == "w" and exists:
                self._truncate()
                exists = False
            if not exists:
                if any(p for p in self.path.iterdir() if p.name != self._lock.path.name):
                    raise ProjectError(f"{self.path}: a new project needs an empty folder (QuPath's rule)")
                self._json = pj.new_project_json(self.file, version)
                pj.write_json(self.file, self._json)
                # until its first save succeeds, a new project is removed again when the session fails
                self._new = (self.path, folder_existed)
            else:
                self._json = pj.read_json(self.file, "project file")
            self._check_json()
            self._saved_json = json.loads(json.dumps(self._json))
            self._entries = [NativeEntry(self, e) for e in self._json.get("images", [])]
            if mode != "r":
                for entry in self._entries:
                    entry._repair_summary()
        except BaseException:
            self._lock.release()
            raise

    def _check_json(self) -> None:
        data = self._json
        if not isinstance(data, dict) or not isinstance(data.get("images", []), list):
            raise ProjectError(f"{self.file}: not a QuPath project file (no 'images' list)")
        if "version" not in data and "lastID" not in data:
            raise ProjectError(f"{self.file}: not a QuPath project file (neither 'version' nor 'lastID')")
        seen: dict[int, int] = {}
        for i, entry in enumerate(data.get("images", [])):
            if not isinstance(entry, dict) or "entryID" not in entry:
                raise ProjectError(f"{self.file}: images[{i}] has no entryID")
            entry_id = entry["entryID"]
            # QuPath reads entryID as a Java int: "1", 1.5 or true are not ids, and coercing them hides damage.
            if not isinstance(entry_id, int) or isinstance(entry_id, bool) or not 0 <= entry_id <= 2**31 - 1:
                raise ProjectError(f"{self.file}: images[{i}] has entryID {entry_id!r}, expected a whole number")
            if entry_id in seen:
                raise ProjectError(f"{self.file}: images[{seen[entry_id]}] and images[{i}] have the same "
                                   f"entryID {entry_id}")
            seen[entry_id] = i
            for key, kind in (("imageName", str), ("serverBuilder", dict), ("metadata", dict),
                              ("description", str), ("tags", list)):
                if key in entry and entry[key] is not None and not isinstance(entry[key], kind):
                    raise ProjectError(f"{self.file}: images[{i}] (entryID {entry_id}) has {key} of type "
                                       f"{type(entry[key]).__name__}, expected {kind.__name__}")
        for key in ("lastID", "createTimestamp", "modifyTimestamp"):
            value = data.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ProjectError(f"{self.file}: {key} is {value!r}, expected a whole number")
        if data.get("version") is not None and not isinstance(data.get("version"), str):
            raise ProjectError(f"{self.file}: version is {data.get('version')!r}, expected text")

    def _truncate(self) -> None:
        truncate_project(self.path, keep=self._lock.path)

    # -- context manager ---------------------------------------------------------------------------------------
    def __enter__(self) -> "NativeProject":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        failed = exc_type is not None
        try:
            if exc_type is None and self.mode != "r":
                try:
                    self.save()
                except BaseException:
                    failed = True
                    raise
        finally:
            if failed:
                self._remove_if_new()
            self.close()

    def _remove_if_new(self) -> None:
        """A project created in this session and never saved whole leaves nothing behind (no half project)."""
        new = getattr(self, "_new", None)
        if new is None:
            return
        folder, folder_existed = new
        for item in folder.iterdir():
            if item == self._lock.path:
                continue
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
        self._new = None
        if not folder_existed:
            self._lock.release()
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Close images and release the writer's lock (does not save)."""
        for entry in self._entries:
            entry.close()
        self._lock.release()
        self._closed = True

    def __repr__(self) -> str:
        return f"<QuPath project {self.path} ({len(self._entries)} images, mode {self.mode!r}, native)>"

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise ProjectError(f"{self.file}: opened read-only (mode 'r'); open with mode 'r+' to change it")
        if self._closed:
            raise ProjectError(f"{self.file}: the project is closed")

    # -- contents ------------------------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The QuPath version recorded in ``project.qpproj``."""
        return str(self._json.get("version") or pj.DEFAULT_VERSION)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def images(self) -> list[NativeEntry]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[NativeEntry]:
        return iter(list(self._entries))

    def entry(self, key: int | str) -> NativeEntry:
        """An image entry by id (``3`` or ``"3"``) or by image name."""
        for entry in self._entries:
            if isinstance(key, int) and entry.id == key:
                return entry
        if isinstance(key, str):
            if key.strip().isdigit():
                for entry in self._entries:
                    if entry.id == int(key):
                        return entry
            named = [e for e in self._entries if e.name == key]
            if len(named) == 1:
                return named[0]
            if len(named) > 1:
                raise ProjectError(f"{self.file}: {len(named)} images are named {key!r}; use an id "
                                   f"({', '.join(str(e.id) for e in named)})")
        raise ProjectError(f"{self.file}: no image with id or name {key!r}")

    @property
    def path_classes(self) -> list[PathClass]:
        """The project's classes (``classifiers/classes.json``)."""
        if self._classes is None:
            path = self.path / "classifiers" / "classes.json"
            if path.exists():
                self._classes, self._classes_json = pj.read_classes(path)
            else:
                self._classes, self._classes_json = [], None
        return list(self._classes)

    @path_classes.setter
    def path_classes(self, classes: Iterable[PathClass]) -> None:
        self._check_writable()
        self.path_classes  # noqa: B018 - load the original JSON to keep its unknown fields
        self._classes = [PathClass(c) if isinstance(c, str) else c for c in classes]
        self._classes_changed = True

    def _rebase(self, image_path: Path) -> Path | None:
        """Where an image now is if the project folder moved with its images (QuPath's relative resolution)."""
        old_uri = self._json.get("uri")
        if not isinstance(old_uri, str):
            return None
        old_file = pj.uri_to_path(old_uri)
        if old_file is None:
            return None
        try:
            relative = os.path.relpath(image_path, old_file.parent)
        except ValueError:
            return None
        return (self.path / relative).resolve()

    def relocate(self, mapping: Mapping[str, str] | Callable[[str], str | None]) -> int:
        """Update image URIs: ``mapping`` maps old URI prefixes (or whole URIs) to new ones, or is a function
        URI -> new URI (None keeps it). Returns the number of entries changed (saved with :meth:`save`)."""
        self._check_writable()
        changed = 0
        for entry in self._entries:
            uri = entry.uri
            if uri is None:
                continue
            if callable(mapping):
                new = mapping(uri)
            else:
                new = None
                for old_prefix, new_prefix in mapping.items():
                    if uri == old_prefix or uri.startswith(old_prefix):
                        new = new_prefix + uri[len(old_prefix):]
                        break
            if new and new != uri:
                pj.set_builder_uri(entry._json.get("serverBuilder"), uri, new)
                entry.close()
                changed += 1
        return changed

    def add_image(self, image: str | os.PathLike[str], name: str | None = None, image_type: str | None = None,
                  series: int = 0, allow_duplicates: bool = False) -> NativeEntry:
        """Add an image file as a new entry (its size, channels and pyramid read from the file)."""
        self._check_writable()
        path = Path(image).absolute()
        if not path.is_file():
            raise ProjectError(f"{path}: image file not found")
        uri = pj.path_to_uri(path)
        if not allow_duplicates and any(e.uri == uri and _series(e) == series for e in self._entries):
            raise ProjectError(f"{path}: already in the project (pass allow_duplicates=True to add it again)")
        reader = px.open_image(path, series)
        try:
            metadata = reader.qupath_metadata()
            provider = _OPENSLIDE if path.suffix.lower() in (".svs", ".ndpi", ".mrxs", ".scn") else _BIOFORMATS
            args = ["--series", str(series)] if provider == _BIOFORMATS else []
            builder = {"builderType": "uri", "providerClassName": provider, "uri": uri, "args": args,
                       "metadata": metadata}
            if image_type is None:
                image_type = "FLUORESCENCE" if not reader.is_rgb and reader.size_c > 1 else "UNSET"
            if image_type not in IMAGE_TYPES:
                raise ProjectError(f"image type must be one of {', '.join(IMAGE_TYPES)}, got {image_type!r}")
            entry_id = int(self._json.get("lastID", 0) or 0) + 1
            existing = {e.id for e in self._entries}
            while entry_id in existing or (self.path / "data" / str(entry_id)).exists():
                entry_id += 1
            data = pj.new_entry_json(entry_id, name or path.name, builder, self.version)
            entry = NativeEntry(self, data)
            entry.data_dir.mkdir(parents=True, exist_ok=True)
            pj.write_json(entry.data_dir / "server.json", builder)
            entry._reader = reader
            _write_thumbnail(entry)
            self._json["lastID"] = entry_id
            self._json.setdefault("images", []).append(data)
            self._entries.append(entry)
            entry._qpdata = new_qpdata(builder, image_type, self.version, f"{self.file}::{entry_id}")
            entry._loaded = ()
            entry._qpdata._image_type_read = None  # a new entry's data file is written on save
        except BaseException:
            reader.close()
            raise
        return entry

    def remove_image(self, entry: NativeEntry | int | str, delete_data: bool = True) -> None:
        """Remove an entry (and its ``data/<id>`` folder unless ``delete_data`` is False) on :meth:`save`."""
        self._check_writable()
        entry = entry if isinstance(entry, NativeEntry) else self.entry(entry)
        entry.close()
        self._entries.remove(entry)
        self._json["images"] = [e for e in self._json.get("images", []) if e is not entry._json]
        if delete_data:
            self._pending_deletes = getattr(self, "_pending_deletes", []) + [entry.data_dir]

    @property
    def is_changed(self) -> bool:
        return (self._json != self._saved_json or self._classes_changed
                or any(e.is_changed for e in self._entries) or bool(getattr(self, "_pending_deletes", [])))

    def save(self) -> None:
        """Write what changed: entries' hierarchies, ``project.qpproj`` (with a backup), ``classes.json``."""
        self._check_writable()
        for entry in self._entries:
            entry.save()
        if self._classes_changed and self._classes is not None:
            pj.write_classes(self.path / "classifiers" / "classes.json", self._classes, self._classes_json)
            self._classes_changed = False
        if self._json != self._saved_json:
            self._json["modifyTimestamp"] = int(time.time() * 1000)
            pj.write_json(self.file, self._json, backup=True)
            self._saved_json = json.loads(json.dumps(self._json))
        for folder in getattr(self, "_pending_deletes", []):
            shutil.rmtree(folder, ignore_errors=True)
        self._pending_deletes = []
        self._new = None  # saved whole: a later failure keeps it


def truncate_project(folder: Path, keep: Path | None = None) -> Path:
    """Mode 'w' on an existing project: zip the folder next to itself, then empty it (``keep`` stays).
    Returns the backup's path; if the backup cannot be written nothing is changed."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = folder.parent / f"{folder.name}-backup-{stamp}.zip"
    try:
        with zipfile.ZipFile(backup, "w", zipfile.ZIP_DEFLATED) as zf:
            for item in sorted(folder.rglob("*")):
                if item.is_file() and item != keep:
                    zf.write(item, item.relative_to(folder))
    except OSError as exc:
        backup.unlink(missing_ok=True)
        raise ProjectError(f"{folder}: cannot back the project up before truncating it "
                           f"({exc.strerror or exc}); nothing was changed") from exc
    for item in folder.iterdir():
        if item == keep:
            continue
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()
    return backup


def _series(entry: NativeEntry) -> int:
    return _builder_series(pj.image_builder(entry.server_builder) or {})


def _builder_series(builder: Mapping[str, Any]) -> int:
    """The image series a ``uri`` builder opens (Bio-Formats' ``--series N``; 0 without it)."""
    args = list(builder.get("args", []) or [])
    if "--series" in args:
        try:
            return int(args[args.index("--series") + 1])
        except (IndexError, ValueError):
            return 0
    return 0


def _write_thumbnail(entry: NativeEntry, size: int = 512) -> None:
    """``thumbnail.jpg`` as QuPath shows it in the project's image list (best effort)."""
    try:
        reader = entry.reader()
        downsample = max(1.0, max(reader.width, reader.height) / size)
        rgb = entry.read_rgb(Region(0, 0, reader.width, reader.height, downsample))
        from PIL import Image

        Image.fromarray(rgb).save(entry.data_dir / "thumbnail.jpg", quality=90)
    except Exception:  # noqa: BLE001 - a thumbnail is a convenience, never a reason to fail
        pass
