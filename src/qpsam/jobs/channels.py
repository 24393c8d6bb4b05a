"""Which channels of a fluorescence image SAM sees, and in which colour (``--channels``).

SAM takes 8-bit RGB. A multichannel image is rendered like QuPath's viewer: each channel scaled by its display
range and tinted by its colour. A channel of noise or background in that sum lowers SAM's quality (0.90-0.95
became 0.83-0.92 on the nuclei sample with a noise channel added), so the jobs can render only the channels
chosen, each in the colour given.

A choice is ``CHANNEL[:COLOUR]`` separated by commas: CHANNEL is a channel name (as in QuPath's Brightness &
Contrast) or a number counted from 1 (as QuPath's default names "Channel 1", "Channel 2"...); COLOUR is a name
(red, green, blue, yellow, cyan, magenta, white, gray) or ``#RRGGBB``. Without a colour the channel keeps its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from qpsam.errors import JobError

__all__ = ["ChannelChoice", "parse_channels", "channel_displays"]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "cyan": (0, 255, 255), "magenta": (255, 0, 255), "white": (255, 255, 255), "gray": (255, 255, 255),
    "grey": (255, 255, 255),
}


@dataclass(frozen=True)
class ChannelChoice:
    """One channel to render: its name or 1-based number, and the colour to draw it in (None: its own)."""

    channel: str | int
    color: tuple[int, int, int] | None = None

    def __str__(self) -> str:
        color = "" if self.color is None else ":#{:02x}{:02x}{:02x}".format(*self.color)
        return f"{self.channel}{color}"


def _color(text: str, spec: str) -> tuple[int, int, int]:
    value = text.strip().lower()
    if value in COLORS:
        return COLORS[value]
    if re.fullmatch(r"#[0-9a-f]{6}", value):
        return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
    raise JobError(f"--channels {spec!r}: unknown colour {text!r} (use {', '.join(COLORS)} or #RRGGBB)")


def parse_channels(spec: str | Sequence[ChannelChoice | str | int] | None) -> tuple[ChannelChoice, ...] | None:
    """``"DAPI:white,3:#00ff00"`` (or a sequence of choices) as :class:`ChannelChoice` values; None stays None."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[ChannelChoice] = []
    for item in items:
        if isinstance(item, ChannelChoice):
            out.append(item)
            continue
        if isinstance(item, int):
            out.append(ChannelChoice(item))
            continue
        name, _, color = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        name = name.strip()
        if not name:
            raise JobError(f"--channels {spec!r}: empty channel in {item!r}")
        channel: str | int = int(name) if name.isdigit() else name
        out.append(ChannelChoice(channel, _color(color, str(spec)) if color else None))
    if not out:
        raise JobError("--channels: no channel given")
    return tuple(out)


def _index(choice: ChannelChoice, names: Sequence[str], image: str) -> int:
    if isinstance(choice.channel, int):
        if not 1 <= choice.channel <= len(names):
            raise JobError(f"image {image!r}: no channel {choice.channel} (it has {len(names)}: {', '.join(names)}; "
                           "numbers count from 1)")
        return choice.channel - 1
    lowered = [n.lower() for n in names]
    if choice.channel.lower() not in lowered:
        raise JobError(f"image {image!r}: no channel named {choice.channel!r} (channels: {', '.join(names)})")
    return lowered.index(choice.channel.lower())


def channel_displays(entry: Any, choices: Sequence[ChannelChoice]) -> list[Any]:
    """Display settings for every channel of ``entry``: the chosen ones in their colours, the others black (off).

    Display ranges are QuPath's saved ones for the image where they fit, else the 0.1-99.9 percentiles of a
    low-resolution view of the whole image (the same for every tile and window of the image).
    """
    from qpsam.geometry import Region
    from qpsam.project import pixels as px

    names = [c.name for c in entry.channels]
    if len(names) < 2:
        raise JobError(f"image {entry.name!r} has {len(names)} channel(s); --channels is for multichannel images")
    try:
        saved = entry.properties.get("qupath.lib.display.ImageDisplay")
    except Exception:  # noqa: BLE001 - a project without readable image properties just has no saved display
        saved = None
    found = px.displays_from_property(saved if isinstance(saved, str) else None, names)
    if found is not None:
        base = list(found[0])
    else:
        downsample = max(1.0, max(entry.width, entry.height) / 1024)
        view = entry.read_region(Region(0, 0, entry.width, entry.height, downsample))
        base = []
        for i, name in enumerate(names):
            lo, hi = (float(v) for v in np.percentile(view[:, :, i], [0.1, 99.9]))
            color = entry.channels[i].color or px.DEFAULT_COLORS[i % len(px.DEFAULT_COLORS)]
            base.append(px.ChannelDisplay(name, tuple(color), lo, max(hi, lo + 1)))
    chosen = {_index(c, names, entry.name): c for c in choices}
    out = []
    for i, display in enumerate(base):
        if i not in chosen:
            out.append(px.ChannelDisplay(display.name, (0, 0, 0), display.minimum, display.maximum))
        else:
            color = chosen[i].color or display.color
            out.append(px.ChannelDisplay(display.name, tuple(color), display.minimum, display.maximum))
    return out
