"""What error answers may repeat of a request: short, bounded excerpts, never the input in full.

A 256 MB request with a bad value must not get a 256 MB answer, so every client value that goes into an
error message passes through :func:`clip`, and validation errors keep a few entries with clipped inputs.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any, Sequence

__all__ = ["MAX_DETAIL", "clip", "clip_detail", "validation_detail"]

MAX_DETAIL = 600  # characters of one error message
MAX_ERRORS = 5  # validation errors listed (a list of a million bad items gives a million errors)

_repr = reprlib.Repr()
_repr.maxstring = 120
_repr.maxother = 120
_repr.maxlong = 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def clip(value: Any) -> str:
    """A ``repr`` of a client value cut to about a hundred characters (strings keep both ends)."""
    if isinstance(value, str) and len(value) > _repr.maxstring:
        return f"{_repr.repr(value)} ({len(value)} characters)"
    if isinstance(value, (list, tuple, dict)) and len(value) > _repr.maxlist:
        return f"{_repr.repr(value)} ({len(value)} items)"
    return _repr.repr(value)


def clip_detail(detail: str) -> str:
    """An error message cut to :data:`MAX_DETAIL` characters (the last line of defence against echoes)."""
    if len(detail) <= MAX_DETAIL:
        return detail
    return f"{detail[:MAX_DETAIL]}... ({len(detail)} characters)"


def _plain(value: Any) -> Any:
    """A JSON-ready, bounded stand-in for ``value``: short scalars kept, anything else clipped."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no Infinity or NaN
    if value is None or isinstance(value, (bool, int, float)) and len(repr(value)) <= 40:
        return value
    if isinstance(value, str) and len(value) <= 100:
        return value
    return clip(value)


def validation_detail(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's validation errors with every input, location and context value clipped, at most
    :data:`MAX_ERRORS` of them (then one entry counting the rest)."""
    out: list[dict[str, Any]] = []
    for error in list(errors)[:MAX_ERRORS]:
        item: dict[str, Any] = {
            "type": str(error.get("type", "")),
            "loc": [_plain(p) for p in error.get("loc", ())],
            "msg": clip_detail(str(error.get("msg", ""))),
        }
        if "input" in error:
            item["input"] = _plain(error["input"])
        ctx = error.get("ctx")
        if isinstance(ctx, dict):
            item["ctx"] = {str(k): _plain(v) for k, v in list(ctx.items())[:MAX_ERRORS]}
        out.append(item)
    if len(errors) > MAX_ERRORS:
        out.append({"type": "more_errors", "loc": [], "msg": f"{len(errors) - MAX_ERRORS} more errors not shown"})
    return out
