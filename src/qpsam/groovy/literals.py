"""Groovy literals: every value qpsam writes into a script goes through these.

Numbers always carry a dot whatever the locale (``repr`` and ``Decimal`` formatting never consult it), strings are
single-quoted (no ``$`` interpolation) with every special and non-ASCII character escaped, so a script is plain
ASCII.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

from ..errors import ScriptError

__all__ = ["boolean", "comment", "integer", "literal", "number", "string"]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def _as_float(value: float, what: str, kind: str) -> float:
    """``value`` as a float; booleans, which Python counts as numbers, are refused like any non-number."""
    if isinstance(value, bool):
        raise ScriptError(f"{what} must be {kind}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ScriptError(f"{what} must be {kind}, got {value!r}") from None


def number(value: float, what: str = "value") -> str:
    """A Groovy decimal literal for ``value``: shortest exact digits, always with a dot, never an exponent."""
    v = _as_float(value, what, "a number")
    if not math.isfinite(v):
        raise ScriptError(f"{what} must be finite, got {v!r}")
    text = repr(v)  # shortest round-trip digits; repr never uses the locale
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")  # 'f' formatting of a Decimal is locale-free as well
    if "." not in text:
        text += ".0"
    return "0.0" if text == "-0.0" else text


def integer(value: float, what: str = "value") -> str:
    """A Groovy int literal; ``value`` must be integral and fit a Java int."""
    v = _as_float(value, what, "an integer")
    if not (math.isfinite(v) and v.is_integer()):
        raise ScriptError(f"{what} must be an integer, got {value!r}")
    n = int(value) if isinstance(value, int) else int(v)
    if not _INT_MIN <= n <= _INT_MAX:
        raise ScriptError(f"{what} {n} does not fit a Java int")
    return str(n)


_SIMPLE_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def string(value: str, what: str = "value") -> str:
    """A single-quoted Groovy string (no interpolation); special and non-ASCII characters as escapes."""
    if not isinstance(value, str):
        raise ScriptError(f"{what} must be a string, got {value!r}")
    out = ["'"]
    for ch in value:
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            code = ord(ch)
            if code > 0xFFFF:  # Java strings are UTF-16: write the surrogate pair
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
    out.append("'")
    return "".join(out)


def boolean(value: bool) -> str:
    """A Groovy boolean literal."""
    return "true" if value else "false"


def comment(text: str) -> str:
    """Text safe inside a ``//`` comment: one line, printable ASCII."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))


def literal(value: object, what: str) -> str:
    """The Groovy literal of a Python value: a boolean, an int, a float, or a string (a path as a string)."""
    if isinstance(value, bool):
        return boolean(value)
    if isinstance(value, int):
        return integer(value, what)
    if isinstance(value, float):
        return number(value, what)
    if isinstance(value, (str, Path)):
        return string(str(value), what)
    raise ScriptError(f"{what}: cannot write {type(value).__name__} into a Groovy script")

