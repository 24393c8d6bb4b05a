"""Pixels for the jobs: anything with a size and a ``read_region``; an in-memory array is one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from qpsam.errors import ImageReadError
from qpsam.geometry import Region

__all__ = ["ImageSource", "ArraySource"]


@runtime_checkable
class ImageSource(Protocol):
    """An image the jobs can read regions of (a project entry, a file, an array)."""

    name: str
    width: int
    height: int

    def read_region(self, region: Region) -> np.ndarray:
        """Pixels of ``region`` at its downsample: ``region.shape`` rows and columns, (H, W) or (H, W, C)."""


@dataclass
class ArraySource:
    """An image held in memory as (H, W), (H, W, C) or, with planes, (T, Z, H, W[, C])."""

    array: np.ndarray
    name: str = "array"
    width: int = field(init=False)
    height: int = field(init=False)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] <= 4):
            arr = arr[None, None]
        elif arr.ndim not in (4, 5):
            raise ImageReadError(f"image {self.name!r}: expected (H, W[, C]) or (T, Z, H, W[, C]), got {arr.shape}")
        self.array = arr
        self.height, self.width = arr.shape[2], arr.shape[3]

    @property
    def sizes(self) -> tuple[int, int]:
        """(time points, z-slices)."""
        return self.array.shape[0], self.array.shape[1]

    def read_region(self, region: Region) -> np.ndarray:
        import cv2

        t, z = region.plane.t, region.plane.z
        if not (0 <= t < self.array.shape[0] and 0 <= z < self.array.shape[1]):
            raise ImageReadError(f"image {self.name!r}: plane z={z}, t={t} outside {self.sizes[1]} z, {self.sizes[0]} t")
        x0, y0 = int(round(region.x)), int(round(region.y))
        x1, y1 = int(round(region.x + region.width)), int(round(region.y + region.height))
        if x0 < 0 or y0 < 0 or x1 > self.width or y1 > self.height or x1 <= x0 or y1 <= y0:
            raise ImageReadError(f"image {self.name!r}: region {region.bounds} outside {self.width} x {self.height}")
        crop = self.array[t, z, y0:y1, x0:x1]
        rows, cols = region.shape
        if crop.shape[:2] == (rows, cols):
            return np.ascontiguousarray(crop)
        dtype = crop.dtype
        work = crop.astype(np.float32) if dtype.kind == "b" or dtype.itemsize > 4 else crop
        out = cv2.resize(work, (cols, rows), interpolation=cv2.INTER_AREA if region.downsample >= 1 else cv2.INTER_LINEAR)
        if out.ndim == 2 and crop.ndim == 3:
            out = out[:, :, None]
        return out.astype(dtype) if out.dtype != dtype else out
