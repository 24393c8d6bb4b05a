"""Pixels of the images a project points to, read without QuPath.

TIFF-like files (pyramidal TIFF, OME-TIFF, SVS, NDPI, ...) are read with tifffile (tiles through zarr, so only the
requested area is decoded); openslide is used for other slide formats when it is installed; plain images (PNG,
JPEG, BMP, ...) with Pillow or imageio. A region is read like QuPath's ``readRegion``: the pyramid level is the
coarsest one whose downsample does not exceed the requested downsample, and the pixels read there are resized to
the requested output size. Areas outside the image are zeros.

:func:`render_rgb` turns multichannel (fluorescence) pixels into an 8-bit RGB view with channel colours and display
ranges, as QuPath's viewer (and the SAM extension's rendered server) shows them.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from qpsam.errors import ImageReadError
from qpsam.geometry import Region

__all__ = [
    "ChannelInfo",
    "ChannelDisplay",
    "ImageInfo",
    "ImageReader",
    "open_image",
    "choose_level",
    "render_rgb",
    "default_channel_color",
    "displays_from_property",
]

# QuPath's default colours for the channels of a multichannel image, in order.
_DEFAULT_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 224, 0), (0, 224, 224), (255, 0, 224)]
_PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pnm"}
_PIXEL_TYPES = {
    "uint8": "UINT8", "int8": "INT8", "uint16": "UINT16", "int16": "INT16", "uint32": "UINT32",
    "int32": "INT32", "float32": "FLOAT32", "float64": "FLOAT64",
}


def default_channel_color(index: int, n_channels: int) -> tuple[int, int, int]:
    """The colour QuPath gives channel ``index`` of an image with ``n_channels`` channels."""
    if n_channels == 1:
        return (255, 255, 255)
    return _DEFAULT_COLORS[index % len(_DEFAULT_COLORS)]


@dataclass(frozen=True)
class ChannelInfo:
    """A channel's name and display colour (RGB)."""

    name: str
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class ChannelDisplay:
    """How a channel is rendered: colour, display range, and whether it is shown."""

    color: tuple[int, int, int]
    minimum: float
    maximum: float
    shown: bool = True


@dataclass(frozen=True)
class ImageInfo:
    """What qpsam knows about an image file (sizes in full-resolution pixels, pixel size in micrometres)."""

    path: Path
    width: int
    height: int
    n_channels: int
    size_z: int = 1
    size_t: int = 1
    dtype: str = "uint8"
    is_rgb: bool = False
    downsamples: tuple[float, ...] = (1.0,)
    level_sizes: tuple[tuple[int, int], ...] = ()
    pixel_width: float | None = None
    pixel_height: float | None = None
    z_spacing: float | None = None
    channels: tuple[ChannelInfo, ...] = ()
    tile_width: int | None = None
    tile_height: int | None = None
    series: int = 0
    name: str = ""

    @property
    def pixel_type(self) -> str:
        """QuPath's name for the pixel type (``UINT8``, ``UINT16``, ``FLOAT32``, ...)."""
        return _PIXEL_TYPES.get(self.dtype, self.dtype.upper())

    def qupath_metadata(self) -> dict[str, Any]:
        """The ``metadata`` block QuPath stores in a server builder for this image."""
        channels = self.channels or tuple(ChannelInfo(f"Channel {i + 1}") for i in range(self.n_channels))
        out_channels = []
        for i, channel in enumerate(channels):
            color = channel.color or default_channel_color(i, len(channels))
            out_channels.append({"name": channel.name, "color": _pack(color)})
        if self.pixel_width and self.pixel_height:
            calibration: dict[str, Any] = {
                "pixelWidth": {"value": self.pixel_width, "unit": "µm"},
                "pixelHeight": {"value": self.pixel_height, "unit": "µm"},
            }
        else:
            calibration = {"pixelWidth": {"value": 1.0, "unit": "px"}, "pixelHeight": {"value": 1.0, "unit": "px"}}
        calibration["zSpacing"] = ({"value": self.z_spacing, "unit": "µm"} if self.z_spacing
                                   else {"value": 1.0, "unit": "z-slice"})
        calibration["timeUnit"] = "SECONDS"
        calibration["timepoints"] = []
        sizes = self.level_sizes or ((self.width, self.height),)
        return {
            "name": self.name or self.path.name,
            "width": self.width,
            "height": self.height,
            "sizeZ": self.size_z,
            "sizeT": self.size_t,
            "channelType": "DEFAULT",
            "isRGB": self.is_rgb,
            "pixelType": self.pixel_type,
            "levels": [{"downsample": float(d), "width": w, "height": h}
                       for d, (w, h) in zip(self.downsamples, sizes)],
            "channels": out_channels,
            "pixelCalibration": calibration,
            "preferredTileWidth": self.tile_width or self.width,
            "preferredTileHeight": self.tile_height or self.height,
        }


def _pack(color: Sequence[int]) -> int:
    r, g, b = color[:3]
    packed = (255 << 24) | (r << 16) | (g << 8) | b
    return packed - (1 << 32)


def choose_level(downsamples: Sequence[float], requested: float) -> int:
    """The pyramid level QuPath reads for ``requested``: the coarsest whose downsample is not above it."""
    best = 0
    for i, d in enumerate(downsamples):
        # A small tolerance, so that a level at 3.9999 serves a request for 4.
        if d <= requested * (1 + 1e-3) and d >= downsamples[best]:
            best = i
    return best


class ImageReader(Protocol):
    """A source of pixels for one image (one series of a file)."""

    info: ImageInfo

    def read_level(self, level: int, x0: int, y0: int, x1: int, y1: int, z: int, t: int,
                   channels: Sequence[int] | None) -> np.ndarray:
        """Pixels (rows, cols, channels) of a window of one pyramid level, inside the level's bounds."""

    def close(self) -> None:
        ...


def read_region(reader: ImageReader, region: Region, channels: Sequence[int] | None = None) -> np.ndarray:
    """Pixels of ``region`` as (rows, cols, channels), with ``region.shape`` rows and columns."""
    info = reader.info
    plane = region.plane
    if not 0 <= plane.z < info.size_z or not 0 <= plane.t < info.size_t:
        raise ImageReadError(f"{info.path}: plane z={plane.z}, t={plane.t} is outside the image "
                             f"({info.size_z} z-slices, {info.size_t} time points)")
    if channels is None and plane.c >= 0:
        channels = [plane.c]
    if channels is not None:
        channels = [int(c) for c in channels]
        bad = [c for c in channels if not 0 <= c < info.n_channels]
        if bad:
            raise ImageReadError(f"{info.path}: channel(s) {bad} do not exist (the image has {info.n_channels})")
    n_out = info.n_channels if channels is None else len(channels)
    rows, cols = region.shape
    level = choose_level(info.downsamples, region.downsample)
    ld = info.downsamples[level]
    lw, lh = info.level_sizes[level] if info.level_sizes else (info.width, info.height)
    # The window of the level that covers the region, in level pixels.
    fx0, fy0 = region.x / ld, region.y / ld
    fx1, fy1 = (region.x + region.width) / ld, (region.y + region.height) / ld
    ix0, iy0 = math.floor(fx0 + 1e-9), math.floor(fy0 + 1e-9)
    ix1, iy1 = math.ceil(fx1 - 1e-9), math.ceil(fy1 - 1e-9)
    cx0, cy0, cx1, cy1 = max(ix0, 0), max(iy0, 0), min(ix1, lw), min(iy1, lh)
    dtype = np.dtype(info.dtype)
    block = np.zeros((max(iy1 - iy0, 1), max(ix1 - ix0, 1), n_out), dtype=dtype)
    if cx1 > cx0 and cy1 > cy0:
        inner = reader.read_level(level, cx0, cy0, cx1, cy1, plane.z, plane.t, channels)
        block[cy0 - iy0:cy1 - iy0, cx0 - ix0:cx1 - ix0] = inner
    exact = (fx0 == ix0 and fy0 == iy0 and fx1 == ix1 and fy1 == iy1)
    if exact and block.shape[:2] == (rows, cols):
        return block
    return _resample(block, (fx0 - ix0, fy0 - iy0, fx1 - ix0, fy1 - iy0), (rows, cols))


def _resample(block: np.ndarray, window: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """Resize the part ``window`` (x0, y0, x1, y1 in block pixels) of ``block`` to ``shape`` (rows, cols)."""
    import cv2

    rows, cols = shape
    x0, y0, x1, y1 = window
    sx, sy = (x1 - x0) / cols, (y1 - y0) / rows
    shrinking = sx > 1 or sy > 1
    work = block if block.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64) else block.astype(
        np.float64)
    if shrinking:
        # Area averaging over a crop aligned with whole block pixels, as closely as the window allows.
        crop = work[int(round(y0)):max(int(round(y1)), int(round(y0)) + 1),
                    int(round(x0)):max(int(round(x1)), int(round(x0)) + 1)]
        out = np.stack([cv2.resize(np.ascontiguousarray(crop[..., c]), (cols, rows), interpolation=cv2.INTER_AREA)
                        for c in range(crop.shape[2])], axis=-1)
    else:
        matrix = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5]], dtype=np.float64)
        out = np.stack([cv2.warpAffine(np.ascontiguousarray(work[..., c]), matrix, (cols, rows),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_REPLICATE)
                        for c in range(work.shape[2])], axis=-1)
    return out.astype(block.dtype, copy=False)


# ------------------------------------------------------------------------------------------------------------
# TIFF (tifffile)


class _TiffReader:
    def __init__(self, path: Path, series: int = 0) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(path)
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for bad files
            raise ImageReadError(f"{path}: not a readable TIFF ({exc})") from exc
        try:
            if not 0 <= series < len(self._tif.series):
                raise ImageReadError(f"{path}: has no series {series} (it has {len(self._tif.series)})")
            self._series = self._tif.series[series]
            self._levels = list(self._series.levels)
            self._arrays: dict[int, Any] = {}
            self.info = self._describe(path, series)
        except BaseException:
            self._tif.close()
            raise

    def _describe(self, path: Path, series: int) -> ImageInfo:
        s = self._series
        axes = s.axes.upper()
        shape = dict(zip(axes, s.shape))
        width, height = int(shape.get("X", 1)), int(shape.get("Y", 1))
        n_c = int(shape.get("C", 1)) * int(shape.get("S", 1))
        size_z = int(shape.get("Z", 1))
        size_t = int(shape.get("T", 1))
        is_rgb = "S" in shape and shape["S"] in (3, 4) and "C" not in shape and s.dtype == np.uint8
        sizes = []
        for level in self._levels:
            lshape = dict(zip(level.axes.upper(), level.shape))
            sizes.append((int(lshape.get("X", 1)), int(lshape.get("Y", 1))))
        downsamples = [1.0]
        for w, h in sizes[1:]:
            downsamples.append(0.5 * (width / w + height / h))
        page = s.keyframe if hasattr(s, "keyframe") else self._tif.pages[0]
        tile_w = int(getattr(page, "tilewidth", 0) or 0) or width
        tile_h = int(getattr(page, "tilelength", 0) or 0) or int(getattr(page, "rowsperstrip", 0) or 0) or height
        pixel_w = pixel_h = z_spacing = None
        channels: list[ChannelInfo] = []
        if self._tif.is_ome and self._tif.ome_metadata:
            pixel_w, pixel_h, z_spacing, channels = _ome_details(self._tif.ome_metadata, series)
        if pixel_w is None:
            pixel_w, pixel_h = _resolution(page)
        if pixel_w is None and self._tif.is_svs:
            match = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", str(page.description))
            if match:
                pixel_w = pixel_h = float(match.group(1))
        if is_rgb:
            channels = [ChannelInfo("Red", (255, 0, 0)), ChannelInfo("Green", (0, 255, 0)),
                        ChannelInfo("Blue", (0, 0, 255))][:n_c]
        if len(channels) != n_c:
            channels = [ChannelInfo(f"Channel {i + 1}", default_channel_color(i, n_c)) for i in range(n_c)]
        return ImageInfo(
            path=path, width=width, height=height, n_channels=n_c, size_z=size_z, size_t=size_t,
            dtype=str(np.dtype(s.dtype)), is_rgb=is_rgb, downsamples=tuple(downsamples), level_sizes=tuple(sizes),
            pixel_width=pixel_w, pixel_height=pixel_h, z_spacing=z_spacing, channels=tuple(channels),
            tile_width=tile_w, tile_height=tile_h, series=series, name=path.name,
        )

    def _array(self, level: int) -> Any:
        array = self._arrays.get(level)
        if array is None:
            try:
                import zarr

                array = zarr.open(self._tif.aszarr(series=self.info.series, level=level), mode="r")
            except Exception:  # noqa: BLE001 - fall back to decoding the whole level
                array = self._levels[level].asarray()
            self._arrays[level] = array
        return array

    def read_level(self, level: int, x0: int, y0: int, x1: int, y1: int, z: int, t: int,
                   channels: Sequence[int] | None) -> np.ndarray:
        axes = self._levels[level].axes.upper()
        index: list[Any] = []
        for axis in axes:
            if axis == "Y":
                index.append(slice(y0, y1))
            elif axis == "X":
                index.append(slice(x0, x1))
            elif axis in ("C", "S"):
                index.append(slice(None))
            elif axis == "Z":
                index.append(z)
            elif axis == "T":
                index.append(t)
            else:
                index.append(0)
        try:
            data = np.asarray(self._array(level)[tuple(index)])
        except Exception as exc:  # noqa: BLE001 - codec errors, truncated files
            raise ImageReadError(f"{self.info.path}: cannot read pixels ({exc})") from exc
        kept = [a for a in axes if a in ("Y", "X", "C", "S")]
        order = [kept.index("Y"), kept.index("X")] + [i for i, a in enumerate(kept) if a in ("C", "S")]
        data = np.transpose(data, order).reshape(y1 - y0, x1 - x0, -1)
        if channels is not None:
            data = data[..., list(channels)]
        return data

    def close(self) -> None:
        self._tif.close()


def _resolution(page: Any) -> tuple[float | None, float | None]:
    """Pixel size in µm from TIFF resolution tags (None when they are absent or meaningless)."""
    try:
        unit = int(page.tags["ResolutionUnit"].value)
        xr = page.tags["XResolution"].value
        yr = page.tags["YResolution"].value
    except (KeyError, TypeError, ValueError):
        return None, None
    per_unit = {2: 25400.0, 3: 10000.0}.get(unit)
    if per_unit is None:
        return None, None
    try:
        x = xr[0] / xr[1]
        y = yr[0] / yr[1]
    except (TypeError, ZeroDivisionError, IndexError):
        return None, None
    if x <= 0 or y <= 0 or (x == 1 and y == 1):
        return None, None
    return per_unit / x, per_unit / y


_UNITS_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}


def _ome_details(xml: str, series: int) -> tuple[float | None, float | None, float | None, list[ChannelInfo]]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None, None, []
    images = [e for e in root.iter() if e.tag.endswith("}Image") or e.tag == "Image"]
    if series >= len(images):
        return None, None, None, []
    pixels = next((e for e in images[series] if e.tag.endswith("Pixels")), None)
    if pixels is None:
        return None, None, None, []

    def size(key: str) -> float | None:
        value = pixels.get(key)
        if value is None:
            return None
        scale = _UNITS_UM.get(pixels.get(key + "Unit", "µm"))
        return None if scale is None else float(value) * scale

    channels = []
    for i, ch in enumerate(e for e in pixels if e.tag.endswith("Channel")):
        color = None
        if ch.get("Color") is not None:
            packed = int(ch.get("Color")) & 0xFFFFFFFF  # OME packs RGBA
            color = ((packed >> 24) & 255, (packed >> 16) & 255, (packed >> 8) & 255)
        channels.append(ChannelInfo(ch.get("Name") or f"Channel {i + 1}", color))
    return size("PhysicalSizeX"), size("PhysicalSizeY"), size("PhysicalSizeZ"), channels


# ------------------------------------------------------------------------------------------------------------
# Plain images (Pillow / imageio): decoded whole, then treated as a one-level pyramid


class _PlainReader:
    def __init__(self, path: Path) -> None:
        try:
            from PIL import Image

            with Image.open(path) as image:
                image.load()
                data = np.asarray(image)
        except Exception:  # noqa: BLE001 - fall back to imageio for what Pillow cannot read
            try:
                import imageio.v3 as iio

                data = np.asarray(iio.imread(path))
            except Exception as exc:  # noqa: BLE001
                raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
        if data.ndim == 2:
            data = data[..., None]
        if data.ndim != 3:
            raise ImageReadError(f"{path}: unsupported image shape {data.shape}")
        if data.shape[2] == 4 and data.dtype == np.uint8:
            data = data[..., :3]  # QuPath shows RGBA images as RGB
        self._data = data
        n = data.shape[2]
        is_rgb = n == 3 and data.dtype == np.uint8
        channels = ([ChannelInfo("Red", (255, 0, 0)), ChannelInfo("Green", (0, 255, 0)),
                     ChannelInfo("Blue", (0, 0, 255))] if is_rgb
                    else [ChannelInfo(f"Channel {i + 1}", default_channel_color(i, n)) for i in range(n)])
        self.info = ImageInfo(path=path, width=data.shape[1], height=data.shape[0], n_channels=n,
                              dtype=str(data.dtype), is_rgb=is_rgb, level_sizes=((data.shape[1], data.shape[0]),),
                              channels=tuple(channels), name=path.name)

    def read_level(self, level: int, x0: int, y0: int, x1: int, y1: int, z: int, t: int,
                   channels: Sequence[int] | None) -> np.ndarray:
        data = self._data[y0:y1, x0:x1]
        return data if channels is None else data[..., list(channels)]

    def close(self) -> None:
        self._data = np.zeros((0, 0, 0))


# ------------------------------------------------------------------------------------------------------------
# OpenSlide (optional)


class _OpenSlideReader:
    def __init__(self, path: Path) -> None:
        import openslide  # type: ignore[import-not-found]

        try:
            self._slide = openslide.OpenSlide(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ImageReadError(f"{path}: not readable by OpenSlide ({exc})") from exc
        s = self._slide
        w, h = s.dimensions
        mpp_x = s.properties.get("openslide.mpp-x")
        mpp_y = s.properties.get("openslide.mpp-y")
        self.info = ImageInfo(
            path=path, width=w, height=h, n_channels=3, dtype="uint8", is_rgb=True,
            downsamples=tuple(float(d) for d in s.level_downsamples), level_sizes=tuple(s.level_dimensions),
            pixel_width=float(mpp_x) if mpp_x else None, pixel_height=float(mpp_y) if mpp_y else None,
            channels=(ChannelInfo("Red", (255, 0, 0)), ChannelInfo("Green", (0, 255, 0)),
                      ChannelInfo("Blue", (0, 0, 255))), name=path.name,
        )

    def read_level(self, level: int, x0: int, y0: int, x1: int, y1: int, z: int, t: int,
                   channels: Sequence[int] | None) -> np.ndarray:
        d = self.info.downsamples[level]
        image = self._slide.read_region((int(round(x0 * d)), int(round(y0 * d))), level, (x1 - x0, y1 - y0))
        data = np.asarray(image.convert("RGB"))
        return data if channels is None else data[..., list(channels)]

    def close(self) -> None:
        self._slide.close()


def open_image(path: str | os.PathLike[str], series: int = 0) -> ImageReader:
    """Open an image file for region reads (tifffile, then OpenSlide if installed, then Pillow/imageio)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    suffix = path.suffix.lower()
    if suffix in _PLAIN_SUFFIXES:
        return _PlainReader(path)
    errors = []
    try:
        return _TiffReader(path, series)
    except ImageReadError as exc:
        errors.append(str(exc))
    try:
        return _OpenSlideReader(path)
    except ImportError:
        pass
    except ImageReadError as exc:
        errors.append(str(exc))
    try:
        return _PlainReader(path)
    except ImageReadError as exc:
        errors.append(str(exc))
    raise ImageReadError("; ".join(errors))


# ------------------------------------------------------------------------------------------------------------
# Rendering


def displays_from_property(value: str | None, n_channels: int) -> list[ChannelDisplay] | None:
    """Channel displays from QuPath's ``qupath.lib.display.ImageDisplay`` image property (JSON), if usable."""
    if not value:
        return None
    import json

    try:
        items = json.loads(value)
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    direct = [i for i in items if isinstance(i, Mapping) and "minDisplay" in i and "maxDisplay" in i
              and str(i.get("class", "")).endswith("DirectServerChannelInfo")]
    if len(direct) != n_channels:
        return None
    out = []
    for item in direct:
        packed = int(item.get("color", -1)) & 0xFFFFFFFF
        out.append(ChannelDisplay(((packed >> 16) & 255, (packed >> 8) & 255, packed & 255),
                                  float(item["minDisplay"]), float(item["maxDisplay"]),
                                  bool(item.get("selected", True))))
    if not any(d.shown for d in out):
        out = [replace(d, shown=True) for d in out]
    return out


def default_displays(pixels: np.ndarray, info: ImageInfo) -> list[ChannelDisplay]:
    """Displays from the channel colours and, as ranges, the 0.1-99.9 percentiles of ``pixels`` (8-bit: 0-255)."""
    out = []
    channels = info.channels or tuple(ChannelInfo(f"Channel {i + 1}") for i in range(info.n_channels))
    for i in range(pixels.shape[2]):
        color = channels[i].color if i < len(channels) and channels[i].color else default_channel_color(
            i, pixels.shape[2])
        if pixels.dtype == np.uint8:
            lo, hi = 0.0, 255.0
        else:
            values = pixels[..., i]
            lo, hi = (float(v) for v in np.percentile(values, [0.1, 99.9])) if values.size else (0.0, 1.0)
            if hi <= lo:
                hi = lo + 1
        out.append(ChannelDisplay(color, lo, hi))
    return out


def render_rgb(pixels: np.ndarray, displays: Sequence[ChannelDisplay]) -> np.ndarray:
    """Additive colour rendering of (rows, cols, channels) pixels to 8-bit RGB."""
    if pixels.ndim != 3 or pixels.shape[2] != len(displays):
        raise ImageReadError(f"{pixels.shape[-1] if pixels.ndim == 3 else '?'} channels but {len(displays)} "
                             "channel displays")
    out = np.zeros(pixels.shape[:2] + (3,), dtype=np.float32)
    for i, d in enumerate(displays):
        if not d.shown:
            continue
        span = d.maximum - d.minimum
        scaled = (pixels[..., i].astype(np.float32) - d.minimum) / (span if span else 1.0)
        np.clip(scaled, 0, 1, out=scaled)
        out += scaled[..., None] * (np.asarray(d.color, dtype=np.float32) / 255.0)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)

