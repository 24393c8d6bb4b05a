"""qpsam: run Segment Anything models on QuPath projects.

Importing :mod:`qpsam` is light: no torch, no Java, not even numpy or shapely. Every name below is imported from
its module on first use, so ``qpsam.open_project`` costs what the project layer costs and nothing more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qpsam._version import __version__
from qpsam.errors import QpsamError

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from qpsam.engines import load_engine
    from qpsam.engines.remote import SamapiClient
    from qpsam.geometry import Region
    from qpsam.jobs import AutomaskOptions, DetectOptions, EngineSpec, TrackOptions
    from qpsam.jobs.run import automask, detect
    from qpsam.jobs.tracking import track
    from qpsam.objects import DEFAULT_PLANE, ImagePlane, ObjectType, PathClass, PathObject
    from qpsam.project import open_project
    from qpsam.sam import AutomaskParams, OutputType, Prompt

# name -> the module that defines it
_LAZY: dict[str, str] = {
    "open_project": "qpsam.project",
    "DEFAULT_PLANE": "qpsam.objects",
    "ImagePlane": "qpsam.objects",
    "ObjectType": "qpsam.objects",
    "PathClass": "qpsam.objects",
    "PathObject": "qpsam.objects",
    "Region": "qpsam.geometry",
    "Prompt": "qpsam.sam",
    "OutputType": "qpsam.sam",
    "AutomaskParams": "qpsam.sam",
    "load_engine": "qpsam.engines",
    "SamapiClient": "qpsam.engines.remote",
    "detect": "qpsam.jobs",
    "automask": "qpsam.jobs",
    "track": "qpsam.jobs",
    "DetectOptions": "qpsam.jobs",
    "AutomaskOptions": "qpsam.jobs",
    "TrackOptions": "qpsam.jobs",
    "EngineSpec": "qpsam.jobs",
}

__all__ = [
    "QpsamError",
    "__version__",
    "open_project",
    "DEFAULT_PLANE",
    "ImagePlane",
    "ObjectType",
    "PathClass",
    "PathObject",
    "Region",
    "Prompt",
    "OutputType",
    "AutomaskParams",
    "load_engine",
    "SamapiClient",
    "detect",
    "automask",
    "track",
    "DetectOptions",
    "AutomaskOptions",
    "TrackOptions",
    "EngineSpec",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qpsam' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
