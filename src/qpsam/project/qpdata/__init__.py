"""QuPath's ``data.qpdata`` (a Java-serialised ``ImageData``) mapped to and from qpsam's object model.

Split along the file's own layers: :mod:`.values` (plain Java values, the instances a stream shares, classes,
measurements, metadata), :mod:`.rois` (ROIs and the ROI class QuPath makes of a geometry), :mod:`.objects` (path
objects and their hierarchy) and :mod:`.file` (:class:`QpData`, reading, safe writing, ``summary.json``).
"""

from __future__ import annotations

from .file import QpData, new_qpdata, parse_qpdata, read_qpdata, summarize, summary_json, write_qpdata
from .rois import ellipse_polygon, roi_class
from .values import java_to_python

__all__ = [
    "QpData",
    "read_qpdata",
    "parse_qpdata",
    "write_qpdata",
    "new_qpdata",
    "summarize",
    "summary_json",
    "ellipse_polygon",
    "java_to_python",
    "roi_class",
]
