"""Objects checked against the image they belong to: what a corrupt ``data.qpdata`` can say that no image allows.

A damaged file can still parse: a flipped bit turns a coordinate into 3.45e35 or a time point into 25088. These
checks compare each object with the image's own metadata (size, z-slices, time points, channels). Reading warns
(:class:`~qpsam.errors.DataWarning`) so the data stays inspectable; writing and jobs refuse, naming the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from qpsam.objects import PathObject, walk

__all__ = ["ImageLimits", "object_problems", "describe_problems", "INT32_MAX"]

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class ImageLimits:
    """What an image allows; ``None`` where it is not known (the checks that need it are skipped)."""

    width: int | None = None
    height: int | None = None
    size_z: int | None = None
    size_t: int | None = None
    size_c: int | None = None

    @property
    def margin(self) -> float:
        """How far outside the image an object may reach: one image size (QuPath lets objects overhang)."""
        return float(max(self.width or 0, self.height or 0))


def _label(obj: PathObject) -> str:
    return f"object {obj.id}" + (f" ({obj.name!r})" if obj.name else "")


def _geometry_problem(kind: str, geometry: BaseGeometry, limits: ImageLimits) -> str | None:
    coords = shapely.get_coordinates(geometry)
    if coords.size == 0:
        return None
    if not np.isfinite(coords).all():
        return f"{kind} has non-finite coordinates"
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    if np.abs(coords).max() > INT32_MAX:
        return f"{kind} has coordinates beyond 2^31 ({float(np.abs(coords).max()):.4g})"
    if limits.width and limits.height:
        m = limits.margin
        if lo[0] < -m or lo[1] < -m or hi[0] > limits.width + m or hi[1] > limits.height + m:
            return (f"{kind} spans x {lo[0]:.4g}..{hi[0]:.4g}, y {lo[1]:.4g}..{hi[1]:.4g}, far outside the "
                    f"{limits.width} x {limits.height} image")
    return None


def _plane_problem(obj: PathObject, limits: ImageLimits) -> str | None:
    c, z, t = obj.plane.c, obj.plane.z, obj.plane.t
    if z < 0 or (limits.size_z is not None and z >= limits.size_z) or z > INT32_MAX:
        return f"z-slice {z} is outside the image's {limits.size_z if limits.size_z is not None else '?'} slice(s)"
    if t < 0 or (limits.size_t is not None and t >= limits.size_t) or t > INT32_MAX:
        return f"time point {t} is outside the image's {limits.size_t if limits.size_t is not None else '?'} " \
               "time point(s)"
    if c < -1 or (limits.size_c is not None and c >= limits.size_c) or c > INT32_MAX:
        return f"channel {c} is outside the image's {limits.size_c if limits.size_c is not None else '?'} channel(s)"
    return None


def object_problems(objects: Iterable[PathObject], limits: ImageLimits) -> list[str]:
    """One line per object that the image cannot hold (non-finite or far-off coordinates, planes out of range,
    non-finite measurements are allowed: QuPath writes NaN for missing values)."""
    found = []
    for obj in walk(objects):
        why = _plane_problem(obj, limits) or _geometry_problem("geometry", obj.geometry, limits)
        if why is None and obj.nucleus is not None:
            why = _geometry_problem("nucleus", obj.nucleus, limits)
        if why is not None:
            found.append(f"{_label(obj)}: {why}")
    return found


def describe_problems(problems: Sequence[str], shown: int = 3) -> str:
    """The first few problems and how many more."""
    text = "; ".join(problems[:shown])
    if len(problems) > shown:
        text += f"; and {len(problems) - shown} more"
    return text
