"""Images as they travel in samapi requests: base64 of a whole image file, decoded to 8-bit RGB."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np

from ..errors import QpsamError
from ..sam import to_rgb8

__all__ = ["BadImage", "ImageTooLarge", "decode_b64_image", "decode_image_bytes", "encode_png_b64"]


class BadImage(QpsamError, ValueError):
    """A payload that is not base64 or not an image (the server answers 422)."""


class ImageTooLarge(QpsamError, ValueError):
    """An image with more pixels than the server accepts (the server answers 413)."""


def decode_b64_image(data: str, *, field: str = "b64img", max_pixels: int | None = None) -> np.ndarray:
    """Decode a base64 image file into (H, W, 3) uint8 RGB; ``field`` names the JSON key in errors."""
    if not isinstance(data, str) or not data:
        raise BadImage(f"{field} is empty")
    text = data.strip()
    if text.startswith("data:") and "," in text:  # tolerate data URLs; the extension never sends them
        text = text.split(",", 1)[1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImage(f"{field} is not valid base64: {exc}") from None
    return decode_image_bytes(raw, field=field, max_pixels=max_pixels)


def decode_image_bytes(raw: bytes, *, field: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Decode image file bytes (PNG, JPEG, TIFF, ...) into (H, W, 3) uint8 RGB.

    Grayscale, palette, alpha, 16-bit and float images are accepted: 8-bit data keeps its values (alpha is
    dropped), higher bit depths are scaled by :func:`qpsam.sam.to_rgb8`.
    """
    from PIL import Image, UnidentifiedImageError

    if not raw:
        raise BadImage(f"{field} holds no bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(
                    f"{field} is {width}x{height} = {width * height} pixels; this server accepts at most {max_pixels}"
                )
            image.load()
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{field} is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        return _decode_other(raw, field, max_pixels)
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"{field} is not a readable image: {exc}") from None
    if width == 0 or height == 0:
        raise BadImage(f"{field} has no pixels ({width}x{height})")
    try:
        return _pil_to_rgb8(image)
    except (QpsamError, ValueError, TypeError) as exc:
        raise BadImage(f"{field} has pixels that cannot be made RGB (mode {image.mode}): {exc}") from None


def _pil_to_rgb8(image: "object") -> np.ndarray:
    mode = image.mode  # type: ignore[attr-defined]
    if mode in ("RGB", "L", "RGBA", "LA"):
        arr = np.asarray(image)
    elif mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        arr = np.asarray(image.convert("RGBA" if "A" in mode or mode == "P" else "RGB"))  # type: ignore[attr-defined]
    else:  # I;16, I;16B, I, F: high bit depth grayscale
        arr = np.asarray(image)
        if arr.dtype.byteorder not in ("=", "|"):
            arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim == 3 and arr.shape[2] == 2:  # LA: gray + alpha
        arr = arr[:, :, 0]
    return to_rgb8(arr)


def _decode_other(raw: bytes, field: str, max_pixels: int | None) -> np.ndarray:
    """Images PIL cannot open (16-bit RGB TIFF and the like) through tifffile."""
    if raw[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        raise BadImage(f"{field} is not an image file PIL or tifffile can read")
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(raw)) as tif:
            page = tif.pages[0]
            shape = page.shape
            pixels = int(np.prod(shape[:2]))
            if max_pixels is not None and pixels > max_pixels:
                raise ImageTooLarge(f"{field} has {pixels} pixels; this server accepts at most {max_pixels}")
            arr = page.asarray()
    except ImageTooLarge:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds
        raise BadImage(f"{field} is not a readable TIFF: {exc}") from None
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W)
    try:
        return to_rgb8(arr)
    except QpsamError as exc:
        raise BadImage(f"{field}: {exc}") from None


def encode_png_b64(image: np.ndarray) -> str:
    """(H, W, 3) uint8 RGB -> base64 PNG, the way the QuPath extension sends images."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_rgb8(image)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")
