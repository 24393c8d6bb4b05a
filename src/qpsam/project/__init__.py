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
from typing import Any, Literal

from qpsam.errors import ProjectError

from .native import MODES, NativeEntry, NativeProject

__all__ = ["open_project", "NativeProject", "NativeEntry", "MODES", "available_backends"]

Backend = Literal["auto", "native", "paquo"]


def available_backends() -> list[str]:
    """The backends that can run here (``native`` always; ``paquo`` when paquo and a QuPath are installed)."""
    from . import paquo_backend

    return ["native"] + (["paquo"] if paquo_backend.available() else [])


def open_project(path: str | os.PathLike[str], mode: str = "r", backend: Backend = "auto",
                 **kwargs: Any) -> Any:
    """Open (or create) a QuPath project: a folder or its ``project.qpproj``.

    ``backend`` is ``native``, ``paquo`` or ``auto`` (paquo when QuPath is installed). Use it as a context manager
    to save on exit (unless read only) and release the writer's lock.
    """
    if mode not in MODES:
        raise ProjectError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if backend not in ("auto", "native", "paquo"):
        raise ProjectError(f"backend must be 'auto', 'native' or 'paquo', got {backend!r}")
    if backend in ("auto", "paquo"):
        from . import paquo_backend

        if paquo_backend.available():
            return paquo_backend.PaquoProject(path, mode, **kwargs)
        if backend == "paquo":
            raise ProjectError(f"backend 'paquo' is not available: {paquo_backend.unavailable_reason()}")
    return NativeProject(path, mode, **kwargs)
