"""Type aliases shared across qpsam, in one place so that every module spells a callback the same way."""

from __future__ import annotations

import os
from typing import Callable, Union

__all__ = ["Progress", "ImageProgress", "StepProgress", "PathLike"]

#: ``progress(done, total)``: units done so far out of ``total`` (0 when unknown).
Progress = Callable[[int, int], None]
#: ``progress(image name, images done, images total)``, called by batch runs once per image.
ImageProgress = Callable[[str, int, int], None]
#: ``progress(image name, unit, units done, units total)``: steps within one image (tiles, frames, prompts).
StepProgress = Callable[[str, str, int, int], None]
#: A file system path as callers pass it.
PathLike = Union[str, os.PathLike[str]]
