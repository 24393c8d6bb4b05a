"""Pixels without Java: regions of TIFF/OME-TIFF/SVS pyramids (tifffile) and plain images (Pillow).

A region is read from the pyramid level QuPath would pick (the highest-resolution level whose downsample is not
above the one asked for: ``ServerTools.getPreferredResolutionLevel``), then resized to ``region.shape`` with area
averaging. :meth:`ImageReader.render_rgb` renders multichannel images to RGB with channel colours and display
ranges, like the extension's rendered server, because SAM takes RGB.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from qpsam.colors import Color, pack_argb, unpack_argb, unpack_rgba
from qpsam.errors import ImageReadError
from qpsam.geometry import Region

__all__ = ["ChannelDisplay", "ChannelInfo", "ImageReader", "RegionRenderer", "open_image", "DEFAULT_COLORS", "displays_from_property",
           "render_pixels"]

#: QuPath's default channel colours for fluorescence: red, green, blue, then yellow, cyan, magenta, ...
DEFAULT_COLORS: tuple[Color, ...] = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
    (255, 128, 0), (128, 0, 255), (255, 255, 255),
)

_PLAIN = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass(frozen=True)
class ChannelDisplay:
    """How a channel is drawn in the rendered RGB view: colour and the display range mapped to 0..255."""

    name: str
    color: Color
    minimum: float
    maximum: float


@dataclass(frozen=True)
class ChannelInfo:
    """A channel of an image entry: its name and display colour (RGB)."""

    name: str
    color: Color | None = None


class RegionRenderer:
    """RGB views of regions for readers that have ``read_region``, ``default_display`` and channel metadata."""

    is_rgb: bool

    def read_region(self, region: Region, channels: Sequence[int] | None = None) -> np.ndarray:
        raise NotImplementedError

    def default_display(self) -> list[ChannelDisplay]:
        raise NotImplementedError

    def render_rgb(self, region: Region, display: Sequence[ChannelDisplay] | None = None,
                   channels: Sequence[int] | None = None) -> np.ndarray:
        """An 8-bit RGB view of ``region``: each shown channel scaled by its display range and tinted by its colour."""
        raw = self.read_region(region)
        if self.is_rgb and display is None and channels is None:
            return np.ascontiguousarray(raw[:, :, :3])
        display = list(display) if display is not None else self.default_display()
        return render_pixels(raw, display, channels)


@dataclass
class ImageReader(RegionRenderer):
    """An image file: its size, planes, channels, pyramid levels, and region reads.

    Axes are normalised to (T, Z, C, Y, X) per level. Readers are cheap to pickle (the file is reopened lazily), so
    they can travel to Dask workers.
    """

    path: Path
    series: int = 0
    width: int = field(init=False)
    height: int = field(init=False)
    size_c: int = field(init=False)
    size_z: int = field(init=False)
    size_t: int = field(init=False)
    dtype: np.dtype = field(init=False)
    is_rgb: bool = field(init=False)
    downsamples: tuple[float, ...] = field(init=False)
    channel_names: tuple[str, ...] = field(init=False)
    channel_colors: tuple[Color, ...] = field(init=False)
    pixel_size_um: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._lock = threading.Lock()
        self._tif: Any = None
        self._levels: list[tuple[object, str]] | None = None
        self._plain: np.ndarray | None = None
        if not self.path.is_file():
            raise ImageReadError(f"image file {self.path} does not exist")
        self._inspect()

    # -- pickling: drop open handles
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_lock", "_tif", "_levels", "_plain"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._tif, self._levels, self._plain = None, None, None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_tiff(self) -> bool:
        return self.path.suffix.lower() not in _PLAIN

    # -- metadata
    def _inspect(self) -> None:
        if not self.is_tiff:
            arr = self._plain_array()
            self.height, self.width = arr.shape[3], arr.shape[4]
            self.size_t, self.size_z, self.size_c = arr.shape[0], arr.shape[1], arr.shape[2]
            self.dtype = arr.dtype
            self.is_rgb = self.size_c == 3 and arr.dtype == np.uint8
            self.downsamples = (1.0,)
            self.channel_names = ("Red", "Green", "Blue") if self.is_rgb else tuple(f"Channel {i + 1}" for i in range(self.size_c))
            self.channel_colors = DEFAULT_COLORS[: self.size_c] if self.size_c <= 3 else _colors(self.size_c)
            self.pixel_size_um = None
            return
        tif = self._tiff()
        if not 0 <= self.series < len(tif.series):
            raise ImageReadError(f"image file {self.path}: has no series {self.series} (it has {len(tif.series)})")
        try:
            series = tif.series[self.series]
        except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds on corrupt files
            raise ImageReadError(f"image file {self.path}: cannot read TIFF structure: {exc}") from exc
        axes = series.axes.upper()
        shape = dict(zip(axes, series.shape))
        self.width, self.height = int(shape.get("X", 0)), int(shape.get("Y", 0))
        if not self.width or not self.height:
            raise ImageReadError(f"image file {self.path}: no X/Y axes in TIFF series (axes {series.axes})")
        self.size_c = int(shape.get("C", 1)) * int(shape.get("S", 1))
        self.size_z, self.size_t = int(shape.get("Z", 1)), int(shape.get("T", 1))
        self.dtype = np.dtype(series.dtype)
        self.is_rgb = "S" in axes and shape["S"] in (3, 4) and self.dtype == np.uint8
        self.downsamples = tuple(self.width / int(dict(zip(lv.axes.upper(), lv.shape))["X"]) for lv in series.levels)
        names, colors = _ome_channels(tif, self.size_c)
        self.channel_names = names or (("Red", "Green", "Blue") if self.is_rgb else tuple(f"Channel {i + 1}" for i in range(self.size_c)))
        self.channel_colors = colors or (DEFAULT_COLORS[:3] if self.is_rgb else _colors(self.size_c))
        self.pixel_size_um = _pixel_size(tif)

    def _tiff(self) -> Any:
        if self._tif is None:
            import tifffile

            try:
                self._tif = tifffile.TiffFile(self.path)
            except Exception as exc:  # noqa: BLE001
                raise ImageReadError(f"image file {self.path}: not a readable TIFF: {exc}") from exc
        return self._tif

    def _plain_array(self) -> np.ndarray:
        if self._plain is None:
            from PIL import Image

            try:
                with Image.open(self.path) as im:
                    arr = np.asarray(im.convert("RGB") if im.mode in ("P", "CMYK", "YCbCr", "LA", "RGBA") else im)
            except Exception as exc:  # noqa: BLE001
                raise ImageReadError(f"image file {self.path}: cannot read: {exc}") from exc
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            self._plain = np.moveaxis(arr, 2, 0)[None, None]  # (T, Z, C, Y, X)
        return self._plain

    # -- pixels
    def level_for(self, downsample: float) -> int:
        """The pyramid level QuPath reads for ``downsample``: the coarsest one not coarser than asked."""
        best = 0
        for i, d in enumerate(self.downsamples):
            if d <= downsample * (1 + 1e-3) and d >= self.downsamples[best]:
                best = i
        return best

    def _level_array(self, level: int):  # noqa: ANN202
        with self._lock:
            if self._levels is None:
                import zarr

                series = self._tiff().series[self.series]
                self._levels = []
                for i, lv in enumerate(series.levels):
                    store = series.aszarr(level=i)
                    self._levels.append((zarr.open(store, mode="r"), lv.axes.upper()))
            return self._levels[level]

    def read_level(self, level: int, x0: int, y0: int, x1: int, y1: int, z: int = 0, t: int = 0,
                   channels: Sequence[int] | None = None) -> np.ndarray:
        """Pixels of one pyramid level in level coordinates, as (H, W, C)."""
        if not (0 <= z < self.size_z and 0 <= t < self.size_t):
            raise ImageReadError(f"image {self.name}: plane z={z}, t={t} is outside {self.size_z} z-slices, {self.size_t} time points")
        if not self.is_tiff:
            out = self._plain_array()[t, z, :, y0:y1, x0:x1]
            out = np.moveaxis(out, 0, 2)
        else:
            arr, axes = self._level_array(level)
            index = []
            for ax in axes:
                index.append({"T": t, "Z": z, "Y": slice(y0, y1), "X": slice(x0, x1)}.get(ax, slice(None)))
            try:
                block = np.asarray(arr[tuple(index)])
            except Exception as exc:  # noqa: BLE001
                raise ImageReadError(f"image {self.name}: cannot read pixels of level {level}: {exc}") from exc
            kept = [ax for ax in axes if ax not in "TZ"]
            order = [kept.index(ax) for ax in ("Y", "X")] + [i for i, ax in enumerate(kept) if ax in "CS"]
            block = np.transpose(block, order)
            out = block.reshape(block.shape[0], block.shape[1], -1)
        if channels is not None:
            bad = [c for c in channels if not 0 <= c < out.shape[2]]
            if bad:
                raise ImageReadError(f"image {self.name}: channels {bad} do not exist (it has {out.shape[2]})")
            out = out[:, :, list(channels)]
        return out

    def read_region(self, region: Region, channels: Sequence[int] | None = None) -> np.ndarray:
        """Raw pixels of ``region`` (full-resolution coordinates) at its downsample: ``region.shape`` + (C,)."""
        x0, y0 = max(0.0, region.x), max(0.0, region.y)
        x1, y1 = min(float(self.width), region.x + region.width), min(float(self.height), region.y + region.height)
        if x1 <= x0 or y1 <= y0:
            raise ImageReadError(f"image {self.name}: region {region.bounds} lies outside {self.width} x {self.height}")
        level = self.level_for(region.downsample)
        ld = self.downsamples[level]
        lx0, ly0 = int(math.floor(x0 / ld)), int(math.floor(y0 / ld))
        lx1, ly1 = int(math.ceil(x1 / ld)), int(math.ceil(y1 / ld))
        block = self.read_level(level, lx0, ly0, lx1, ly1, region.plane.z, region.plane.t, channels)
        rows, cols = region.shape
        # Place the (clipped) read into the full region, padding outside the image with zeros.
        scale = ld / region.downsample
        out_x0, out_y0 = int(round((x0 - region.x) / region.downsample)), int(round((y0 - region.y) / region.downsample))
        want_w = min(cols - out_x0, max(1, int(round((x1 - x0) / region.downsample))))
        want_h = min(rows - out_y0, max(1, int(round((y1 - y0) / region.downsample))))
        if block.shape[0] != want_h or block.shape[1] != want_w:
            block = _resize(block, want_h, want_w, shrink=scale < 1)
        if (want_h, want_w) == (rows, cols):
            return block
        out = np.zeros((rows, cols, block.shape[2]), block.dtype)
        out[out_y0:out_y0 + want_h, out_x0:out_x0 + want_w] = block
        return out

    def close(self) -> None:
        """Close the file (it is reopened on the next read)."""
        with self._lock:
            if self._tif is not None:
                self._tif.close()
            self._tif, self._levels = None, None

    def level_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every pyramid level."""
        if not self.is_tiff:
            return [(self.width, self.height)]
        series = self._tiff().series[self.series]
        out = []
        for lv in series.levels:
            shape = dict(zip(lv.axes.upper(), lv.shape))
            out.append((int(shape["X"]), int(shape["Y"])))
        return out

    def qupath_metadata(self) -> dict:
        """The ``metadata`` block QuPath stores in a server builder (``project.qpproj``, ``server.json``)."""
        channels = [{"name": n, "color": pack_argb(c[:3])} for n, c in zip(self.channel_names, self.channel_colors)]
        if self.pixel_size_um:
            calibration: dict = {"pixelWidth": {"value": self.pixel_size_um, "unit": "µm"},
                                 "pixelHeight": {"value": self.pixel_size_um, "unit": "µm"}}
        else:
            calibration = {"pixelWidth": {"value": 1.0, "unit": "px"}, "pixelHeight": {"value": 1.0, "unit": "px"}}
        calibration.update({"zSpacing": {"value": 1.0, "unit": "z-slice"}, "timeUnit": "SECONDS", "timepoints": []})
        tile_w, tile_h = self.width, self.height
        if self.is_tiff:
            page = self._tiff().series[self.series].keyframe
            tile_w = int(getattr(page, "tilewidth", 0) or 0) or self.width
            tile_h = int(getattr(page, "tilelength", 0) or 0) or int(getattr(page, "rowsperstrip", 0) or 0) \
                or self.height
        return {
            "name": self.name, "width": self.width, "height": self.height, "sizeZ": self.size_z,
            "sizeT": self.size_t, "channelType": "DEFAULT", "isRGB": bool(self.is_rgb),
            "pixelType": _PIXEL_TYPES.get(np.dtype(self.dtype).name, np.dtype(self.dtype).name.upper()),
            "levels": [{"downsample": float(d), "width": w, "height": h}
                       for d, (w, h) in zip(self.downsamples, self.level_sizes())],
            "channels": channels, "pixelCalibration": calibration,
            "preferredTileWidth": min(tile_w, self.width), "preferredTileHeight": min(tile_h, self.height),
        }

    # -- rendering (render_rgb: RegionRenderer)
    def default_display(self) -> list[ChannelDisplay]:
        """Display ranges from the lowest-resolution level: 0.1-99.9 percentiles per channel (uint8 RGB: 0-255)."""
        if self.is_rgb or self.dtype == np.uint8 and self.size_c in (1, 3):
            return [ChannelDisplay(n, c, 0.0, 255.0) for n, c in zip(self.channel_names, self.channel_colors)]
        level = len(self.downsamples) - 1
        ld = self.downsamples[level]
        thumb = self.read_level(level, 0, 0, int(math.ceil(self.width / ld)), int(math.ceil(self.height / ld)))
        out = []
        for i in range(self.size_c):
            lo, hi = np.percentile(thumb[:, :, i], [0.1, 99.9])
            out.append(ChannelDisplay(self.channel_names[i], self.channel_colors[i], float(lo), float(max(hi, lo + 1))))
        return out


_PIXEL_TYPES = {"uint8": "UINT8", "int8": "INT8", "uint16": "UINT16", "int16": "INT16", "uint32": "UINT32",
                "int32": "INT32", "float32": "FLOAT32", "float64": "FLOAT64"}


def displays_from_property(value: object, names: Sequence[str]) -> tuple[list[ChannelDisplay], list[int]] | None:
    """QuPath's saved display settings (the ``qupath.lib.display.ImageDisplay`` image property, JSON) as channel
    displays and the indices of the channels shown; None when they do not fit an image with these channels."""
    import json

    if not isinstance(value, str):
        return None
    try:
        items = json.loads(value)
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    direct = [i for i in items if isinstance(i, dict) and "minDisplay" in i and "maxDisplay" in i
              and str(i.get("class", "")).endswith("DirectServerChannelInfo")]
    if len(direct) != len(names):
        return None
    displays, shown = [], []
    for k, (item, name) in enumerate(zip(direct, names)):
        lo, hi = float(item["minDisplay"]), float(item["maxDisplay"])
        displays.append(ChannelDisplay(name, unpack_argb(item.get("color", -1)), lo, hi if hi > lo else lo + 1))
        if item.get("selected", True):
            shown.append(k)
    return displays, (shown or list(range(len(names))))


def render_pixels(raw: np.ndarray, display: Sequence[ChannelDisplay], channels: Sequence[int] | None = None) -> np.ndarray:
    """Additive 8-bit RGB rendering of (rows, cols, channels) pixels (for pixels not read by an ImageReader)."""
    shown = list(channels) if channels is not None else list(range(raw.shape[2]))
    rgb = np.zeros(raw.shape[:2] + (3,), np.float32)
    for c in shown:
        d = display[c]
        scaled = np.clip((raw[:, :, c].astype(np.float32) - d.minimum) / (d.maximum - d.minimum), 0, 1)
        rgb += scaled[:, :, None] * (np.asarray(d.color, np.float32) / 255.0)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _resize(block: np.ndarray, rows: int, cols: int, shrink: bool) -> np.ndarray:
    import cv2

    dtype = block.dtype
    work = block.astype(np.float32) if dtype not in (np.uint8, np.uint16, np.float32) else block
    out = cv2.resize(work, (cols, rows), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[:, :, None]
    return out.astype(dtype, copy=False)


def _colors(n: int) -> tuple[Color, ...]:
    if n == 1:
        return ((255, 255, 255),)
    return tuple(DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(n))


def _ome_channels(tif, n: int) -> tuple[tuple[str, ...] | None, tuple[Color, ...] | None]:  # noqa: ANN001
    xml = tif.ome_metadata
    if not xml:
        return None, None
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    channels = [el for el in root.iter() if el.tag.endswith("}Channel") or el.tag == "Channel"]
    if len(channels) != n:
        return None, None
    names, colors = [], []
    for i, ch in enumerate(channels):
        names.append(ch.get("Name") or f"Channel {i + 1}")
        value = ch.get("Color")
        if value is not None:
            colors.append(unpack_rgba(int(value)))  # OME stores RGBA as a signed int
        else:
            colors.append(_colors(n)[i])
    return tuple(names), tuple(colors)


def _pixel_size(tif) -> float | None:  # noqa: ANN001
    xml = tif.ome_metadata
    if xml:
        import re

        match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', xml)
        if match:
            return float(match.group(1))
    return None


def open_image(path: str | os.PathLike[str], series: int = 0) -> ImageReader:
    """An :class:`ImageReader` for a local image file (TIFF family through tifffile, other formats through Pillow)."""
    return ImageReader(Path(path), series)
