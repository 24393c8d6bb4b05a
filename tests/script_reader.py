"""Read calls and their literal arguments back out of a generated Groovy script, in plain Python.

A second reader next to Groovy's own parser (``groovy_parse.py``), so that the values of a script are checked
on machines without Java as well. It understands the literals qpsam writes: numbers, single-quoted strings
with escapes, ``true``/``false``/``null``, lists and ``[key: value]`` maps of those; any other argument comes
back as ``{"expr": text}``. Its answers have the same shape as the Groovy driver's.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from groovy_parse import Call

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "\\": "\\", "'": "'", '"': '"', "$": "$"}


def _string_end(text: str, start: int) -> int:
    """Index after the string literal that starts at ``start``."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise ValueError(f"unterminated string at {start}")


def _comment_end(text: str, start: int) -> int:
    if text.startswith("//", start):
        end = text.find("\n", start)
        return len(text) if end < 0 else end
    end = text.find("*/", start + 2)
    return len(text) if end < 0 else end + 2


CODE, STRING, COMMENT = 0, 1, 2


def _kinds(text: str) -> list[int]:
    """For every character: CODE, STRING (inside a string literal) or COMMENT."""
    kinds = [CODE] * len(text)
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            end = _string_end(text, i)
            for j in range(i + 1, end):
                kinds[j] = STRING
            i = end
        elif text.startswith("//", i) or text.startswith("/*", i):
            end = _comment_end(text, i)
            for j in range(i, end):
                kinds[j] = COMMENT
            i = end
        else:
            i += 1
    return kinds


def _code_mask(text: str) -> list[bool]:
    """True for characters that are code (not inside strings or comments)."""
    return [k == CODE for k in _kinds(text)]


def _matching(text: str, open_at: int, mask: list[bool]) -> int:
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = [pairs[text[open_at]]]
    i = open_at + 1
    while i < len(text):
        ch = text[i]
        if mask[i]:
            if ch in pairs:
                stack.append(pairs[ch])
            elif ch in ")]}":
                if ch != stack.pop():
                    raise ValueError(f"unbalanced {ch!r} at {i}")
                if not stack:
                    return i
        i += 1
    raise ValueError(f"unclosed {text[open_at]!r} at {open_at}")


def _split_top(text: str, sep: str = ",") -> list[str]:
    mask = _code_mask(text)
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(text):
        if not mask[i]:
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[last:i])
            last = i + 1
    tail = text[last:]
    if tail.strip():
        parts.append(tail)
    return [p.strip() for p in parts]


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        else:
            out.append(_ESCAPES[nxt])
            i += 2
    # Java strings are UTF-16: join surrogate pairs.
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")


_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def value(text: str) -> Any:
    """A literal as a Python value (ints as int, decimals as Decimal text kept exact)."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if _NUMBER.fullmatch(text):
        return int(text) if "." not in text else Decimal(text)
    if text[:1] == "'" and _string_end(text, 0) == len(text):
        return _unescape(text[1:-1])
    if text.startswith("[") and _matching(text, 0, _code_mask(text)) == len(text) - 1:
        inner = text[1:-1].strip()
        if not inner:
            return []
        items = _split_top(inner)
        if all(_split_top(item, ":")[0] != item for item in items):
            return {"map": [[value(k), value(v)] for k, v in (_split_top(item, ":") for item in items)]}
        return [value(item) for item in items]
    if re.fullmatch(r"[A-Za-z_]\w*", text):
        return {"var": text}
    return {"expr": text}


_CALL = re.compile(r"(?:new\s+(?P<cls>[\w.]+)|(?P<name>[A-Za-z_]\w*))\s*\(")
_DECL = re.compile(r"^\s*(?:var|def)\s+(?P<var>\w+)\s*=\s*", re.M)


def calls(text: str) -> list[Call]:
    """Every call, constructor call and declaration of ``text``, in source order."""
    mask = _code_mask(text)
    found: list[tuple[int, Call]] = []
    for match in _CALL.finditer(text):
        if not mask[match.start()]:
            continue
        if match["name"] in ("if", "for", "while", "switch", "catch"):
            continue
        open_at = match.end() - 1
        close_at = _matching(text, open_at, mask)
        args = tuple(value(a) for a in _split_top(text[open_at + 1 : close_at]))
        line = text.count("\n", 0, match.start()) + 1
        if match["cls"]:
            found.append((match.start(), Call("new", match["cls"], line, args)))
        else:
            receiver = text[: match.start()].rstrip()
            receiver = receiver[:-1].rstrip() if receiver.endswith(".") else ""
            found.append((match.start(), Call(match["name"], receiver.split()[-1] if receiver else "", line, args)))
    kinds = _kinds(text)
    for match in _DECL.finditer(text):
        if not mask[match.start("var")]:
            continue
        start = match.end()
        end = start
        # The value runs to the end of the line (or a comment), or to the bracket that closes one opened on it.
        while end < len(text) and text[end] != "\n" and kinds[end] != COMMENT:
            if mask[end] and text[end] in "([{":
                end = _matching(text, end, mask)
            end += 1
        line = text.count("\n", 0, match.start()) + 1
        found.append((match.start(), Call("=", match["var"], line, (value(text[start:end]),))))
    return [call for _, call in sorted(found, key=lambda item: item[0])]
