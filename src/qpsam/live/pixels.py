"""Pixels of a live QuPath image: through the gateway (``getImageBytes``), or from the file when it is reachable.

Through the gateway, a region is read tile by tile as QuPath's entry point gives it: an ImageJ TIFF (all channels of
one plane, ImageJ's 8-bit, 16-bit or 32-bit float) or, for 8-bit RGB images, a PNG. Reading the file directly is
much faster (no encoding, no socket), so ``route="auto"`` takes the file whenever qpsam can open it and it has the
size, channels and planes that QuPath reports; the gateway then carries only the objects.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

import numpy as np

from qpsam.errors import LiveError, QpsamError
from qpsam.geometry import Region

if TYPE_CHECKING:
    from qpsam.jobs.sources import ImageSource

__all__ = ["GatewaySource", "LiveImageInfo", "ROUTES", "TILE", "image_source", "local_file"]


class LiveImageInfo(Protocol):
    """What the pixel routes read of a live image (a :class:`qpsam.live.gateway.LiveImage`, which reads its pixels
    through this module: a Protocol keeps the two modules out of each other's imports)."""

    gateway: Any  # the LiveGateway: ``call(doing)`` and ``entry_point``
    server: Any  # QuPath's ImageServer (a Java object)
    name: str
    width: int
    height: int
    n_channels: int
    size_z: int
    size_t: int
    is_rgb: bool
    uris: list[str]

#: Largest tile (output pixels a side) read through the gateway in one call.
TILE = 2048
ROUTES = ("auto", "file", "gateway")


@dataclass
class GatewaySource:
    """An :class:`~qpsam.jobs.sources.ImageSource` over QuPath's image server, read through the gateway."""

    image: LiveImageInfo
    tile: int = TILE
    name: str = field(init=False)
    width: int = field(init=False)
    height: int = field(init=False)
    calls: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.tile < 16:
            raise LiveError(f"gateway tile size must be >= 16 pixels, got {self.tile}")
        self.name = self.image.name
        self.width, self.height = self.image.width, self.image.height

    def _fetch(self, x: int, y: int, w: int, h: int, downsample: float, z: int, t: int) -> np.ndarray:
        fmt = "png" if self.image.is_rgb else "imagej tiff"
        gateway = self.image.gateway
        with gateway.call(f"reading pixels ({x}, {y}, {w} x {h}, z={z}, t={t}) of image {self.name!r}"):
            data = bytes(gateway.entry_point.getImageBytes(self.image.server, float(downsample), x, y, w, h, z, t, fmt))
        self.calls += 1
        return _decode(data, fmt, self.image.is_rgb, self.name)

    def read_region(self, region: Region) -> np.ndarray:
        """Pixels of ``region`` at its downsample, (H, W, C), read in tiles of at most ``tile`` pixels a side."""
        z, t = region.plane.z, region.plane.t
        if not (0 <= z < self.image.size_z and 0 <= t < self.image.size_t):
            raise LiveError(f"image {self.name!r}: plane z={z}, t={t} is outside its {self.image.size_z} z-slices, "
                            f"{self.image.size_t} time points")
        rows, cols = region.shape
        d = region.downsample
        out: np.ndarray | None = None
        for r0 in range(0, rows, self.tile):
            for c0 in range(0, cols, self.tile):
                xs = _span(region.x, d, c0, min(c0 + self.tile, cols), self.width)
                ys = _span(region.y, d, r0, min(r0 + self.tile, rows), self.height)
                if xs is None or ys is None:
                    continue  # outside the image: stays zero
                (ix0, ix1, oc0, oc1), (iy0, iy1, or0, or1) = xs, ys
                block = self._fetch(ix0, iy0, ix1 - ix0, iy1 - iy0, d, z, t)
                if block.shape[:2] != (or1 - or0, oc1 - oc0):
                    block = _resize(block, or1 - or0, oc1 - oc0)
                if out is None:
                    out = np.zeros((rows, cols, block.shape[2]), block.dtype)
                out[or0:or1, oc0:oc1] = block
        if out is None:
            raise LiveError(f"image {self.name!r}: region {region.bounds} lies outside {self.width} x {self.height}")
        return out


def _span(origin: float, d: float, o0: int, o1: int, size: int) -> tuple[int, int, int, int] | None:
    """For output pixels [o0, o1) of a region starting at ``origin``: the image pixels to request (integers, as
    QuPath's RegionRequest has them, clipped to the image) and the output pixels they fill."""
    f0, f1 = origin + o0 * d, origin + o1 * d
    c0, c1 = max(f0, 0.0), min(f1, float(size))
    if c1 <= c0:
        return None
    i0, i1 = int(math.floor(c0)), min(size, int(math.ceil(c1)))
    out0 = o0 + int(round((c0 - f0) / d))
    out1 = max(out0 + 1, o0 + int(round((c1 - f0) / d)))
    return i0, i1, out0, min(out1, o1)


def _resize(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
    import cv2

    out = cv2.resize(block, (cols, rows), interpolation=cv2.INTER_NEAREST)
    return out[:, :, None] if out.ndim == 2 else out


def _decode(data: bytes, fmt: str, rgb: bool, name: str) -> np.ndarray:
    """QuPath's bytes as (H, W, C): PNG through Pillow, ImageJ TIFF through tifffile (channels last)."""
    try:
        if fmt == "png":
            from PIL import Image

            arr = np.asarray(Image.open(io.BytesIO(data)))
            if arr.ndim == 3 and rgb:
                arr = arr[:, :, :3]
        else:
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                series = tif.series[0]
                arr, axes = series.asarray(), series.axes.upper()
            keep = [i for i, ax in enumerate(axes) if ax in "YXCS"]
            drop = tuple(i for i in range(arr.ndim) if i not in keep)
            arr = arr.reshape([n for i, n in enumerate(arr.shape) if i not in drop]) if drop else arr
            axes = "".join(axes[i] for i in keep)
            order = [axes.index("Y"), axes.index("X")] + [i for i, ax in enumerate(axes) if ax in "CS"]
            arr = np.transpose(arr, order)
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds on bad bytes
        raise LiveError(f"image {name!r}: QuPath's {fmt} bytes cannot be decoded: {exc}") from exc
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def local_file(image: LiveImageInfo) -> tuple[Any | None, str]:
    """qpsam's reader for the image's file when it is here and matches what QuPath reports; else (None, why)."""
    files = [u for u in image.uris if u.startswith("file:")]
    if len(image.uris) != 1 or len(files) != 1:
        return None, f"QuPath reads it from {len(image.uris)} location(s), not one local file"
    path = Path(unquote(urlparse(files[0]).path))
    if not path.is_file():
        return None, f"its file {path} is not reachable from here"
    from qpsam.project.pixels import open_image

    try:
        reader = open_image(path)
    except QpsamError as exc:
        return None, f"qpsam cannot open its file ({exc})"
    ours = (reader.width, reader.height, reader.size_c, reader.size_z, reader.size_t)
    theirs = (image.width, image.height, image.n_channels, image.size_z, image.size_t)
    if ours != theirs:
        return None, (f"its file {path.name} reads as {ours[0]} x {ours[1]}, {ours[2]} channel(s), {ours[3]} z, {ours[4]} t "
                      f"here but {theirs[0]} x {theirs[1]}, {theirs[2]} channel(s), {theirs[3]} z, {theirs[4]} t in QuPath")
    return reader, str(path)


def image_source(image: LiveImageInfo, route: str = "auto", tile: int = TILE) -> tuple["ImageSource", str, str]:
    """The pixel source for a live image: (source, route used, why). ``route``: auto, file or gateway."""
    if route not in ROUTES:
        raise LiveError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
    if route != "gateway":
        reader, why = local_file(image)
        if reader is not None:
            return reader, "file", why
        if route == "file":
            raise LiveError(f"image {image.name!r}: cannot read the file directly: {why}")
        return GatewaySource(image, tile), "gateway", why
    return GatewaySource(image, tile), "gateway", "asked for"
