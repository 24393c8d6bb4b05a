"""QuPath projects from Python: ``open_project`` and the project, entry and hierarchy access behind it.

Two backends share one interface: ``native`` (pure Python: ``.qpproj`` JSON, a Java-serialisation codec for
``data.qpdata``, tifffile/OpenSlide/Pillow for pixels) and ``paquo`` (QuPath itself through paquo and JPype, used
when a QuPath installation is found). ``backend="auto"`` picks paquo when QuPath is available, else native.

Modes follow paquo (and Python files): ``r`` read only, ``r+`` read and write an existing project, ``a`` open or
create, ``w`` create or truncate (the old project is zipped next to its folder first), ``x`` create, failing if the
project exists.
"""

from __future__ import annotations

import os
from typing import Literal

from qpsam.errors import ProjectError

from .base import MODES, Entry, Mode, Project, ProjectRef
from .native import NativeEntry, NativeProject

__all__ = ["open_project", "Project", "ProjectRef", "Entry", "Mode", "NativeProject", "NativeEntry", "MODES", "available_backends"]

Backend = Literal["auto", "native", "paquo"]


def available_backends() -> list[str]:
    """The backends that can run here (``native`` always; ``paquo`` when paquo and a QuPath are installed)."""
    from . import paquo_backend

    return ["native"] + (["paquo"] if paquo_backend.available() else [])


def open_project(path: str | os.PathLike[str], mode: Mode = "r", backend: Backend = "auto", *,
                 version: str | None = None, keep_version: bool | None = None, lock_timeout: float = 0.0) -> Project:
    """Open (or create) a QuPath project: a folder or its ``project.qpproj``.

    ``backend`` is ``native``, ``paquo`` or ``auto`` (paquo when QuPath is installed). Use it as a context manager
    to save on exit (unless read only) and release the writer's lock; ``lock_timeout`` is how long a writer waits
    for another one to finish (seconds).

    ``keep_version`` (paquo): saving through QuPath writes QuPath's own version into ``project.qpproj``. For a
    project of another version, ``backend="paquo"`` refuses to open it for writing unless ``keep_version`` is
    ``True`` (keep the project's version) or ``False`` (take QuPath's); ``auto`` keeps it. The native backend
    always keeps it. ``version`` is the QuPath version a new project is written for (default: native 0.6.0,
    paquo the QuPath it runs).
    """
    if mode not in MODES:
        raise ProjectError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if backend not in ("auto", "native", "paquo"):
        raise ProjectError(f"backend must be 'auto', 'native' or 'paquo', got {backend!r}")
    if backend in ("auto", "paquo"):
        from . import paquo_backend

        if paquo_backend.available():
            if backend == "auto" and keep_version is None:
                keep_version = True  # qpsam chose QuPath: do not change the project's version behind the user
            return paquo_backend.PaquoProject(path, mode, version=version, keep_version=keep_version,
                                              auto=backend == "auto", lock_timeout=lock_timeout)
        if backend == "paquo":
            raise ProjectError(f"backend 'paquo' is not available: {paquo_backend.unavailable_reason()}")
    return NativeProject(path, mode, version=version, lock_timeout=lock_timeout)
