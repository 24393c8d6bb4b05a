"""QuPath's geometric server wrappers read without Java: ``rotated``, ``flipped`` and ``cropped`` image entries.

QuPath stores an image imported with a rotation as a ``rotated`` server builder around the image's own ``uri``
builder (``RotatedImageServer``), QuPath 0.7's flip on import as a ``flipped`` one (``FlippedImageServer``), and a
crop made with ``TransformedServerBuilder.crop`` as a ``cropped`` one (``CroppedImageServer``); they nest, e.g.
``{"builderType": "rotated", "rotation": "ROTATE_90", "builder": {"builderType": "flipped", "flip": "HORIZONTAL",
"builder": {"builderType": "uri", ...}}}``. An entry's coordinates (objects, prompts, regions) are those of the
outermost server, as QuPath shows the image.

:class:`TransformedReader` reads a region the way these servers do: the region is mapped onto the wrapped image,
read there (pyramid level and resizing as usual), then turned. A ``cropped`` server only shifts requests, so a
region that runs past the crop's edge shows the wrapped image's pixels there, as QuPath's does. Every other wrapper
(``channels``, ``color``, ``color_deconvolved``, ``normalized``, ``sparse``, ``affine``, ``z_projected``,
``pyramidize`` and the rest) computes pixels that only QuPath's own server reproduces: :func:`parse_builder`
refuses them with an error that names the type and points to the paquo backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from qpsam.errors import ImageReadError
from qpsam.geometry import Region

from .pixels import ChannelDisplay, ImageReader, RegionRenderer

__all__ = ["Transform", "TransformedReader", "NATIVE_WRAPPERS", "parse_builder", "parse_wrapper", "transform_metadata",
           "wrap"]

#: Server builder types the native backend reads itself (besides ``uri``).
NATIVE_WRAPPERS = ("rotated", "flipped", "cropped")

_ROTATIONS = {"ROTATE_NONE": 0, "ROTATE_90": 90, "ROTATE_180": 180, "ROTATE_270": 270}
_FLIPS = {"NONE": (False, False), "HORIZONTAL": (True, False), "VERTICAL": (False, True), "BOTH": (True, True)}


@dataclass(frozen=True)
class Transform:
    """One geometric wrapper: a clockwise rotation (degrees), a flip, or a crop ``(x, y, width, height)``."""

    kind: str
    rotation: int = 0
    flip_x: bool = False
    flip_y: bool = False
    crop: tuple[int, int, int, int] | None = None

    @property
    def swaps_axes(self) -> bool:
        return self.kind == "rotated" and self.rotation in (90, 270)

    def size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the wrapped image of size ``width`` x ``height``, as this wrapper shows it."""
        if self.kind == "cropped" and self.crop is not None:
            return self.crop[2], self.crop[3]
        return (height, width) if self.swaps_axes else (width, height)

    def inner_region(self, region: Region, inner_width: int, inner_height: int) -> Region:
        """The region of the wrapped image that QuPath's server reads for ``region`` (in this wrapper's frame)."""
        x, y, w, h = region.x, region.y, region.width, region.height
        if self.kind == "cropped" and self.crop is not None:
            x, y = x + self.crop[0], y + self.crop[1]
        elif self.kind == "rotated" and self.rotation == 90:
            x, y, w, h = y, inner_height - x - w, h, w
        elif self.kind == "rotated" and self.rotation == 180:
            x, y = inner_width - x - w, inner_height - y - h
        elif self.kind == "rotated" and self.rotation == 270:
            x, y, w, h = inner_width - y - h, x, h, w
        elif self.kind == "flipped":
            x = inner_width - x - w if self.flip_x else x
            y = inner_height - y - h if self.flip_y else y
        return Region(x, y, w, h, region.downsample, region.plane)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels (rows, cols, channels) read from the wrapped image, turned into this wrapper's frame."""
        if self.kind == "rotated" and self.rotation:
            # np.rot90 turns counter-clockwise for positive k; QuPath's rotations are clockwise.
            pixels = np.rot90(pixels, -self.rotation // 90, axes=(0, 1))
        elif self.kind == "flipped":
            if self.flip_x:
                pixels = pixels[:, ::-1]
            if self.flip_y:
                pixels = pixels[::-1]
        return np.ascontiguousarray(pixels)


def _kind(builder: Mapping[str, Any]) -> str:
    # QuPath 0.4 and earlier wrote uri builders without "builderType".
    return str(builder.get("builderType", "uri" if "uri" in builder else "?"))


def parse_builder(builder: Any) -> tuple[dict[str, Any], list[Transform]]:
    """The image's own ``uri`` builder inside an entry's server builder and the wrappers around it, innermost first.

    Raises :class:`ImageReadError` for a wrapper the native backend does not read (naming its type) and for a
    malformed one."""
    chain: list[Transform] = []
    current = builder
    while True:
        if not isinstance(current, Mapping):
            raise ImageReadError(f"server builder is not a JSON object: {current!r:.80}")
        kind = _kind(current)
        if kind == "uri":
            return dict(current), chain[::-1]
        if kind not in NATIVE_WRAPPERS:
            raise ImageReadError(
                f"server type {kind!r} is not read by the native backend (it reads images and their 'rotated', "
                "'flipped' and 'cropped' wrappers); use --backend paquo (backend='paquo' in Python), which builds "
                "QuPath's own server")
        chain.append(parse_wrapper(current))
        current = current.get("builder")


def parse_wrapper(builder: Mapping[str, Any]) -> Transform:
    """The :class:`Transform` of one ``rotated``, ``flipped`` or ``cropped`` builder (not the builder it wraps)."""
    kind = _kind(builder)
    if kind not in NATIVE_WRAPPERS:
        raise ImageReadError(f"server type {kind!r} is not a rotation, flip or crop")
    if kind == "rotated":
        value = builder.get("rotation", "ROTATE_NONE")
        if value not in _ROTATIONS:
            raise ImageReadError(f"rotated server: unknown rotation {value!r} (expected one of {', '.join(_ROTATIONS)})")
        return Transform("rotated", rotation=_ROTATIONS[value])
    if kind == "flipped":
        value = builder.get("flip", "NONE")
        if value not in _FLIPS:
            raise ImageReadError(f"flipped server: unknown flip {value!r} (expected one of {', '.join(_FLIPS)})")
        flip_x, flip_y = _FLIPS[value]
        return Transform("flipped", flip_x=flip_x, flip_y=flip_y)
    region = builder.get("region")
    try:
        x, y, w, h = (int(region[k]) for k in ("x", "y", "width", "height"))  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        raise ImageReadError(f"cropped server: 'region' must hold integers x, y, width, height, got {region!r}") \
            from None
    if w <= 0 or h <= 0:
        raise ImageReadError(f"cropped server: region {x}, {y}, {w} x {h} is empty")
    return Transform("cropped", crop=(x, y, w, h))


def transform_metadata(meta: Mapping[str, Any], transform: Transform) -> dict[str, Any]:
    """A server builder's ``metadata`` block as the wrapper around it reports it (size, levels, tiles, pixel size),
    for builders written without their own (QuPath's rotate-on-import builder has none until the image is opened)."""
    out = dict(meta)
    width, height = int(meta.get("width", 0)), int(meta.get("height", 0))
    out["width"], out["height"] = transform.size(width, height)
    if transform.swaps_axes:
        out["levels"] = [dict(level, width=level.get("height"), height=level.get("width"))
                         for level in meta.get("levels", [])]
        if "preferredTileWidth" in meta or "preferredTileHeight" in meta:
            out["preferredTileWidth"] = meta.get("preferredTileHeight")
            out["preferredTileHeight"] = meta.get("preferredTileWidth")
        cal = meta.get("pixelCalibration")
        if isinstance(cal, Mapping) and "pixelWidth" in cal and "pixelHeight" in cal:
            out["pixelCalibration"] = dict(cal, pixelWidth=cal["pixelHeight"], pixelHeight=cal["pixelWidth"])
    elif transform.kind == "cropped" and transform.crop is not None:
        x, y, w, h = transform.crop
        out["name"] = f"{meta.get('name', '')} ({x}, {y}, {w}, {h})"
        out["levels"] = [{"downsample": float(level.get("downsample", 1.0)),
                          "width": int(w / float(level.get("downsample", 1.0))),
                          "height": int(h / float(level.get("downsample", 1.0)))}
                         for level in meta.get("levels", [])[:1]]
    return out


class TransformedReader(RegionRenderer):
    """An image read through one geometric wrapper (nest them for chains): the same interface as
    :class:`~qpsam.project.pixels.ImageReader`, in the wrapper's coordinates."""

    def __init__(self, inner: "ImageReader | TransformedReader", transform: Transform) -> None:
        self.inner = inner
        self.transform = transform
        self.width: int
        self.height: int
        self.width, self.height = transform.size(inner.width, inner.height)

    def __repr__(self) -> str:
        return f"<TransformedReader {self.transform} of {self.inner!r}>"

    # What a wrapper does not change comes from the image it wraps.
    name = property(lambda self: self.inner.name)
    path = property(lambda self: self.inner.path)
    size_c = property(lambda self: self.inner.size_c)
    size_z = property(lambda self: self.inner.size_z)
    size_t = property(lambda self: self.inner.size_t)
    dtype = property(lambda self: self.inner.dtype)
    is_rgb = property(lambda self: self.inner.is_rgb)
    downsamples = property(lambda self: self.inner.downsamples)
    channel_names = property(lambda self: self.inner.channel_names)
    channel_colors = property(lambda self: self.inner.channel_colors)
    pixel_size_um = property(lambda self: self.inner.pixel_size_um)

    def level_for(self, downsample: float) -> int:
        """The pyramid level of the wrapped image that a read at ``downsample`` uses."""
        return self.inner.level_for(downsample)

    def read_region(self, region: Region, channels: Sequence[int] | None = None) -> np.ndarray:
        """Raw pixels of ``region`` (this wrapper's full-resolution coordinates): ``region.shape`` + (C,)."""
        x0, y0, x1, y1 = region.bounds
        if x1 <= 0 or y1 <= 0 or x0 >= self.width or y0 >= self.height:
            raise ImageReadError(f"image {self.name} ({_describe(self.transform)}): region {region.bounds} lies "
                                 f"outside {self.width} x {self.height}")
        inner = self.transform.inner_region(region, self.inner.width, self.inner.height)
        return self.transform.apply(self.inner.read_region(inner, channels))

    def default_display(self) -> list[ChannelDisplay]:
        """Display ranges from a low-resolution view of what this wrapper shows (see ``ImageReader``)."""
        if self.is_rgb or self.dtype == np.uint8 and self.size_c in (1, 3):
            return [ChannelDisplay(n, c, 0.0, 255.0) for n, c in zip(self.channel_names, self.channel_colors)]
        downsample = min(max(self.downsamples), max(1.0, max(self.width, self.height) / 256))
        thumb = self.read_region(Region(0, 0, self.width, self.height, downsample))
        out = []
        for i in range(self.size_c):
            lo, hi = np.percentile(thumb[:, :, i], [0.1, 99.9])
            out.append(ChannelDisplay(self.channel_names[i], self.channel_colors[i], float(lo), float(max(hi, lo + 1))))
        return out

    def qupath_metadata(self) -> dict[str, Any]:
        """The ``metadata`` block QuPath's wrapping server reports."""
        return transform_metadata(self.inner.qupath_metadata(), self.transform)

    def level_sizes(self) -> list[tuple[int, int]]:
        return [(max(1, math.ceil(self.width / d)), max(1, math.ceil(self.height / d))) for d in self.downsamples]

    def close(self) -> None:
        self.inner.close()


def _describe(transform: Transform) -> str:
    if transform.kind == "rotated":
        return f"rotated {transform.rotation}°"
    if transform.kind == "flipped":
        ways = {(True, False): "horizontally", (False, True): "vertically", (True, True): "both ways"}
        return "flipped " + ways.get((transform.flip_x, transform.flip_y), "not at all")
    return f"cropped to {transform.crop}"


def wrap(reader: ImageReader, transforms: Sequence[Transform]) -> "ImageReader | TransformedReader":
    """``reader`` seen through ``transforms`` (innermost first)."""
    out: ImageReader | TransformedReader = reader
    for transform in transforms:
        out = TransformedReader(out, transform)
    return out
