"""Colours: the one :data:`Color` type and Java's packed ARGB integers, as QuPath stores them.

QuPath keeps a colour as one Java ``int`` (``0xAARRGGBB``, signed). JSON files hold it signed, Java
serialisation holds it as 32 bits, OME-XML holds RGBA: every reader and writer converts here.
"""

from __future__ import annotations

__all__ = ["Color", "pack_argb", "unpack_argb", "unpack_rgba"]

#: An RGB (or RGBA) colour, each component in 0..255.
Color = tuple[int, ...]


def pack_argb(color: Color, alpha: int = 255) -> int:
    """The signed Java ``int`` of ``color`` (RGB, or RGBA whose alpha wins over ``alpha``)."""
    r, g, b = (int(v) & 255 for v in color[:3])
    a = int(color[3]) & 255 if len(color) > 3 else alpha & 255
    packed = (a << 24) | (r << 16) | (g << 8) | b
    return packed - (1 << 32) if packed >= 1 << 31 else packed


def unpack_argb(value: int, alpha: bool = False) -> Color:
    """``(r, g, b)`` of a packed ARGB ``int`` (signed or not); ``(r, g, b, a)`` with ``alpha``."""
    packed = int(value) & 0xFFFFFFFF
    rgb = ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)
    return rgb + ((packed >> 24) & 255,) if alpha else rgb


def unpack_rgba(value: int) -> Color:
    """``(r, g, b)`` of a packed ``0xRRGGBBAA`` ``int`` (OME-XML's channel colours)."""
    packed = int(value) & 0xFFFFFFFF
    return ((packed >> 24) & 255, (packed >> 16) & 255, (packed >> 8) & 255)
