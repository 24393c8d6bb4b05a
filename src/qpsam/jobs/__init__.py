"""The jobs: prompt detection, automatic masks and tracking on project images, in batch.

``detect``, ``automask`` and ``track`` take a project (a path or an open project), the images to work on, an engine
(an :class:`EngineSpec` for a local model or a samapi server, or a ready engine) and the job's options, and return
a :class:`RunReport`. Each image's objects are written to the project before the next image starts.
"""

from __future__ import annotations

from qpsam.jobs.automask import AutomaskOptions
from qpsam.jobs.batch import Change, Target, View, run_batch
from qpsam.jobs.detect import QUALITY, DetectOptions, detect_image
from qpsam.jobs.executors import EngineSpec, make_executor
from qpsam.jobs.report import ImageReport, RunReport
from qpsam.jobs.run import automask, detect
from qpsam.jobs.sources import ArraySource, ImageSource
from qpsam.jobs.tracking import TrackOptions, track

__all__ = [
    "QUALITY",
    "ArraySource",
    "AutomaskOptions",
    "Change",
    "DetectOptions",
    "EngineSpec",
    "ImageReport",
    "ImageSource",
    "RunReport",
    "Target",
    "TrackOptions",
    "View",
    "automask",
    "detect",
    "detect_image",
    "make_executor",
    "run_batch",
    "track",
]
