"""qpsam: run Segment Anything models on QuPath projects.

Importing :mod:`qpsam` is light: no torch, no Java. Heavy parts (models, paquo, the server) are imported only
by the modules that need them.
"""

from __future__ import annotations

from qpsam._version import __version__
from qpsam.errors import QpsamError
from qpsam.objects import DEFAULT_PLANE, ImagePlane, ObjectType, PathClass, PathObject

__all__ = [
    "DEFAULT_PLANE",
    "ImagePlane",
    "ObjectType",
    "PathClass",
    "PathObject",
    "QpsamError",
    "__version__",
    "open_project",
]


def __getattr__(name: str) -> object:
    # open_project lives in qpsam.project (numpy, tifffile, ...): import it on first use only.
    if name == "open_project":
        from qpsam.project import open_project

        return open_project
    raise AttributeError(f"module 'qpsam' has no attribute {name!r}")
