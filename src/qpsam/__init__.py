"""qpsam: run Segment Anything models on QuPath projects.

Importing :mod:`qpsam` is light: no torch, no Java. Heavy parts (models, paquo, the server) are imported only
by the modules that need them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from qpsam.errors import QpsamError
from qpsam.objects import DEFAULT_PLANE, ImagePlane, ObjectType, PathClass, PathObject

try:
    __version__ = _version("qpsam")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "DEFAULT_PLANE",
    "ImagePlane",
    "ObjectType",
    "PathClass",
    "PathObject",
    "QpsamError",
    "__version__",
]
