"""The one face of a QuPath project, whichever backend opened it.

:class:`Project` and :class:`Entry` are what jobs, commands and the server may use of a project and its images.
:class:`ProjectBase` and :class:`EntryBase` hold what both backends do alike (opening modes, the writer's lock,
entry lookup, the context manager, hierarchy edits, image sizes from QuPath's server metadata and the read-only
guard), so that a backend supplies only how it reads and writes QuPath's files.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
import uuid
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import (
    Any,
    Callable,
    ClassVar,
    Concatenate,
    Generic,
    Iterable,
    Iterator,
    Literal,
    Mapping,
    MutableMapping,
    ParamSpec,
    Protocol,
    Sequence,
    TypeVar,
    Union,
)

import numpy as np

from qpsam.colors import Color, unpack_argb
from qpsam.errors import ImageReadError, ProjectError
from qpsam.fileio import remove_leftovers
from qpsam.filelock import FileLock
from qpsam.geometry import Region
from qpsam.history import HistoryRecord
from qpsam.objects import PathClass, PathObject, walk

from . import hierarchy as hy
from . import qpproj as pj
from .pixels import ChannelDisplay, ChannelInfo
from .qpdata import QpData, summarize, write_qpdata

__all__ = [
    "Entry", "EntryBase", "IMAGE_TYPES", "MODES", "Mode", "Project", "ProjectBase", "ProjectLock", "ProjectRef",
    "check_image_type", "default_image_type", "truncate_project", "writes",
]

#: How a project is opened (paquo's and Python's file modes): ``r`` read only, ``r+`` read and write an existing
#: project, ``a`` open or create, ``w`` create or truncate (the old project is zipped first), ``x`` create only.
Mode = Literal["r", "r+", "a", "w", "x"]
MODES: tuple[Mode, ...] = ("r", "r+", "a", "w", "x")
IMAGE_TYPES = ("BRIGHTFIELD_H_DAB", "BRIGHTFIELD_H_E", "BRIGHTFIELD_OTHER", "FLUORESCENCE", "OTHER", "UNSET")
_MICRONS = ("µm", "um", "microns")


def default_image_type(is_rgb: bool, size_c: int) -> str:
    """The image type a new entry gets unless one is given (QuPath's guess without estimating stains)."""
    return "FLUORESCENCE" if not is_rgb and size_c > 1 else "UNSET"


def check_image_type(value: object) -> None:
    """Refuse an image type QuPath does not know."""
    if value not in IMAGE_TYPES:
        raise ProjectError(f"image type must be one of {', '.join(IMAGE_TYPES)}, got {value!r}")


# ------------------------------------------------------------------------------------------------------------
# The typed face


class Entry(Protocol):
    """One image of a project: metadata, the object hierarchy and pixels."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @name.setter
    def name(self, value: str) -> None: ...
    @property
    def description(self) -> str | None: ...
    @description.setter
    def description(self, value: str | None) -> None: ...
    @property
    def metadata(self) -> MutableMapping[str, str]: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def server_builder(self) -> dict[str, Any]: ...
    @property
    def uri(self) -> str | None: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def data_file(self) -> Path: ...
    @property
    def image_path(self) -> Path | None: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def channels(self) -> list[ChannelInfo]: ...
    @property
    def n_channels(self) -> int: ...
    @property
    def size_z(self) -> int: ...
    @property
    def size_t(self) -> int: ...
    @property
    def pixel_type(self) -> str | None: ...
    @property
    def is_rgb(self) -> bool: ...
    @property
    def downsamples(self) -> list[float]: ...
    @property
    def pixel_size(self) -> tuple[float, float] | None: ...
    @property
    def image_type(self) -> str | None: ...
    @image_type.setter
    def image_type(self, value: str | None) -> None: ...
    @property
    def properties(self) -> dict[str, Any]: ...
    @property
    def objects(self) -> list[PathObject]: ...
    def all_objects(self) -> list[PathObject]: ...
    def set_objects(self, objects: Iterable[PathObject]) -> None: ...
    def add_objects(self, objects: Iterable[PathObject], parent: PathObject | uuid.UUID | None = None) -> None: ...
    def remove_objects(self, objects: Iterable[PathObject | uuid.UUID | str], keep_children: bool = False) -> int: ...
    def replace_objects(self, objects: Iterable[PathObject]) -> None: ...
    def commit(self, run_key: str, records: Sequence[HistoryRecord], added: Sequence[PathObject] = (),
               removed: Sequence[Any] = ()) -> None: ...
    def counts(self) -> dict[str, Any]: ...
    @property
    def is_changed(self) -> bool: ...
    def save(self) -> None: ...
    def read_region(self, region: Region, channels: Sequence[int] | None = None) -> np.ndarray: ...
    def read_rgb(self, region: Region, displays: Sequence[ChannelDisplay] | None = None) -> np.ndarray: ...
    def close(self) -> None: ...


class Project(Protocol):
    """A QuPath project opened by :func:`qpsam.project.open_project` (native or paquo backend)."""

    backend: ClassVar[str]
    file: Path
    path: Path
    mode: Mode

    @property
    def version(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def images(self) -> Sequence[Entry]: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Entry]: ...
    def entry(self, key: int | str) -> Entry: ...
    @property
    def path_classes(self) -> list[PathClass]: ...
    @path_classes.setter
    def path_classes(self, classes: Iterable[PathClass]) -> None: ...
    def relocate(self, mapping: Mapping[str, str] | Callable[[str], str | None]) -> int: ...
    def add_image(self, image: str | os.PathLike[str], name: str | None = None, image_type: str | None = None,
                  series: int = 0, allow_duplicates: bool = False) -> Entry: ...
    def remove_image(self, entry: Entry | int | str, delete_data: bool = True) -> None: ...
    @property
    def is_changed(self) -> bool: ...
    def save(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Project: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None: ...


# ------------------------------------------------------------------------------------------------------------
# The read-only guard


class _Guarded(Protocol):
    def _check_writable(self) -> None: ...


G = TypeVar("G", bound=_Guarded)
P = ParamSpec("P")
R = TypeVar("R")


def writes(method: Callable[Concatenate[G, P], R]) -> Callable[Concatenate[G, P], R]:
    """Mark a method (or property setter) that changes the project: it refuses a read-only or closed project
    before anything is done."""

    @functools.wraps(method)
    def guarded(self: G, /, *args: P.args, **kwargs: P.kwargs) -> R:
        self._check_writable()
        return method(self, *args, **kwargs)

    return guarded


# ------------------------------------------------------------------------------------------------------------
# Lock file and truncation


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


# ------------------------------------------------------------------------------------------------------------
# What both backends share


class EntryBase(ABC):
    """An image entry: what both backends do alike. A backend supplies the identity, the server metadata
    (:meth:`_meta`) and the hierarchy as read (:meth:`_tree`, :meth:`_set_tree`)."""

    _project: ProjectBase[Any]
    _label: ClassVar[str] = ""  # how repr names the backend

    @property
    @abstractmethod
    def id(self) -> int: ...

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def server_builder(self) -> dict[str, Any]: ...

    @abstractmethod
    def _meta(self) -> dict[str, Any]:
        """QuPath's server metadata of the image (sizes, channels, levels, calibration)."""

    @abstractmethod
    def _tree(self) -> list[PathObject]:
        """The hierarchy's top-level objects (read on first use)."""

    @abstractmethod
    def _set_tree(self, objects: list[PathObject]) -> None:
        """Keep ``objects`` as the hierarchy (written on save)."""

    def __repr__(self) -> str:
        return f"<ImageEntry {self.id}: {self.name!r}{self._label}>"

    def _check_writable(self) -> None:
        self._project._check_writable()

    @property
    def uri(self) -> str | None:
        return pj.builder_uri(self.server_builder)

    @property
    def data_dir(self) -> Path:
        # The real folder, also where a backend loads the project from elsewhere (paquo's mode 'r').
        return self._project.path / "data" / str(self.id)

    @property
    def data_file(self) -> Path:
        return self.data_dir / "data.qpdata"

    # -- sizes, from QuPath's server metadata -----------------------------------------------------------------
    @property
    def width(self) -> int:
        return int(self._meta().get("width", 0))

    @property
    def height(self) -> int:
        return int(self._meta().get("height", 0))

    @property
    def channels(self) -> list[ChannelInfo]:
        return [ChannelInfo(str(c.get("name", f"Channel {i + 1}")),
                            unpack_argb(c["color"]) if isinstance(c.get("color"), int) else None)
                for i, c in enumerate(self._meta().get("channels", []))]

    @property
    def n_channels(self) -> int:
        return len(self._meta().get("channels", [])) or 1

    @property
    def size_z(self) -> int:
        return int(self._meta().get("sizeZ", 1))

    @property
    def size_t(self) -> int:
        return int(self._meta().get("sizeT", 1))

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
        """(width, height) of a pixel in micrometres, or None when the image is not calibrated."""
        cal = self._meta().get("pixelCalibration", {})
        pw, ph = cal.get("pixelWidth", {}), cal.get("pixelHeight", {})
        if pw.get("unit") in _MICRONS and ph.get("unit") in _MICRONS:
            return float(pw["value"]), float(ph["value"])
        return None

    def _server_summary(self) -> dict[str, Any]:
        """The ``server`` block of ``summary.json`` (QuPath's project list shows it)."""
        try:
            meta = self._meta()
        except ImageReadError:
            meta = {}
        return {"width": meta.get("width", 0), "height": meta.get("height", 0),
                "sizeC": len(meta.get("channels", [])) or 1, "sizeZ": meta.get("sizeZ", 1),
                "sizeT": meta.get("sizeT", 1)}

    def _image_missing(self) -> ImageReadError:
        """The error for an image file that is not where the project says."""
        return ImageReadError(
            f"entry {self.id} ({self.name!r}): image not found at {self.uri}; move it back or update the "
            "project's image paths with `qpsam relocate PROJECT --search FOLDER` (Python: Project.relocate)")

    def _write_qpdata(self, data: QpData, class_colors: Mapping[str, Color] | None = None) -> QpData:
        """qpsam's own writer: ``data.qpdata`` (the previous file kept as its backup) and ``summary.json``."""
        return write_qpdata(self.data_file, data, summary=self._server_summary(), class_colors=class_colors)

    # -- hierarchy ----------------------------------------------------------------------------------------
    @property
    def objects(self) -> list[PathObject]:
        """The hierarchy: the root's children (each with its own children)."""
        return list(self._tree())

    def all_objects(self) -> list[PathObject]:
        """Every object of the hierarchy, depth first."""
        return list(walk(self._tree()))

    def counts(self) -> dict[str, Any]:
        """Object counts by type and by class (the ``hierarchy`` block of QuPath's ``summary.json``)."""
        return summarize(self._tree())

    @writes
    def set_objects(self, objects: Iterable[PathObject]) -> None:
        """Replace the whole hierarchy."""
        objects = list(objects)

        def replace_all(tree: list[PathObject]) -> list[PathObject]:
            hy.check_objects(objects)
            return objects

        self._edit(replace_all)

    @writes
    def add_objects(self, objects: Iterable[PathObject], parent: PathObject | uuid.UUID | None = None) -> None:
        """Add objects at the top level, or as children of ``parent`` (an object or id in the hierarchy).

        Objects are placed where they are put: unlike QuPath's ``insertObjects`` nothing is re-nested by
        location."""
        objects = list(objects)
        self._edit(lambda tree: hy.add_objects(tree, objects, parent))

    @writes
    def remove_objects(self, objects: Iterable[PathObject | uuid.UUID | str], keep_children: bool = False) -> int:
        """Remove objects (by object or id) wherever they are; their descendants go too unless
        ``keep_children`` (then they move up to the removed object's parent). Returns how many were removed."""
        objects = list(objects)
        self._edit(lambda tree: hy.remove_objects(tree, objects, keep_children))
        return len({o.id if isinstance(o, PathObject) else str(o) for o in objects})

    @writes
    def replace_objects(self, objects: Iterable[PathObject]) -> None:
        """Replace objects by new versions with the same ids, in place. An object given without children keeps
        the children of the one it replaces."""
        objects = list(objects)
        self._edit(lambda tree: hy.replace_objects(tree, objects))

    @writes
    def commit(self, run_key: str, records: Sequence[HistoryRecord], added: Sequence[PathObject] = (),
               removed: Sequence[Any] = ()) -> None:
        """One job's change on this image: journal, edit, verified save, history (:mod:`qpsam.project.commit`)."""
        from .commit import commit

        commit(self, self._project.path, run_key, records, added, removed)

    def _edit(self, change: Callable[[list[PathObject]], list[PathObject]]) -> None:
        try:
            self._set_tree(change(list(self._tree())))
        except ProjectError as exc:
            raise ProjectError(f"entry {self.id} ({self.name}): {exc}") from None

    @abstractmethod
    def close(self) -> None:
        """Close the image (the entry stays usable; pixels are opened again on demand)."""


E = TypeVar("E", bound=EntryBase)
PB = TypeVar("PB", bound="ProjectBase[Any]")


class ProjectBase(ABC, Generic[E]):
    """A project: what both backends do alike (modes, lock, entry lookup, context manager, write checks)."""

    backend: ClassVar[str]
    file: Path
    path: Path
    mode: Mode
    _entries: list[E]

    def _start(self, path: str | os.PathLike[str], mode: str) -> bool:
        """Check ``mode`` against what is on disk (nothing is locked or written yet); True if the project
        exists."""
        if mode not in MODES:
            raise ProjectError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.file = pj.project_file(path).absolute()
        self.path = self.file.parent
        self.mode = mode
        self._lock = ProjectLock(self.file)
        self._entries = []
        self._closed = False
        # (folder, whether it existed before) of a project created in this session and not yet saved whole
        self._new: tuple[Path, bool] | None = None
        exists = self.file.exists()
        if mode in ("r", "r+") and not exists:
            raise ProjectError(f"{self.file}: no such project (use mode 'a', 'w' or 'x' to create one)")
        if mode == "x" and exists:
            raise ProjectError(f"{self.file}: the project already exists (mode 'x' only creates)")
        return exists

    def _lock_folder(self, lock_timeout: float = 0.0) -> None:
        """A writer creates the folder if needed and takes the lock (waiting up to ``lock_timeout`` seconds)."""
        if self.mode == "r":
            return
        if not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except OSError as exc:
                raise ProjectError(f"{self.path}: cannot create the project folder ({exc.strerror or exc})") \
                    from exc
        self._lock.acquire(lock_timeout)

    def _clear_folder(self, exists: bool) -> bool:
        """Mode 'w' truncates an existing project; a new project needs an empty folder (QuPath's rule). True if
        the project still exists."""
        if self.mode == "w" and exists:
            truncate_project(self.path, keep=self._lock.path)
            exists = False
        if not exists and any(p for p in self.path.iterdir() if p.name != self._lock.path.name):
            raise ProjectError(f"{self.path}: a new project needs an empty folder (QuPath's rule)")
        return exists

    # -- context manager ---------------------------------------------------------------------------------------
    def __enter__(self: PB) -> PB:
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
        if self._new is None:
            return
        folder, folder_existed = self._new
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

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise ProjectError(f"{self.file}: opened read-only (mode 'r'); open with mode 'r+' to change it")
        if self._closed:
            raise ProjectError(f"{self.file}: the project is closed")

    @abstractmethod
    def save(self) -> None:
        """Write what changed."""

    # -- entries -------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def images(self) -> list[E]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[E]:
        return iter(list(self._entries))

    def entry(self, key: int | str) -> E:
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

    def _own(self, entry: Entry | int | str) -> E:
        """This project's entry: itself, or the one of that id or name."""
        if isinstance(entry, (int, str)):
            return self.entry(entry)
        for own in self._entries:
            if own is entry:
                return own
        raise ProjectError(f"{self.file}: {entry!r} is not an image of this project")

    def _image_file(self, image: str | os.PathLike[str]) -> Path:
        """The absolute path of an image file to add."""
        path = Path(image).absolute()
        if not path.is_file():
            raise ProjectError(f"{path}: image file not found")
        return path


#: What the jobs take: an open project, or the path of one (opened ``r+`` for the run).
ProjectRef = Union[Project, str, "os.PathLike[str]"]
